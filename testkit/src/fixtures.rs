//! Test data, found from the workspace root whichever crate's test reads it.

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the workspace root")
        .to_path_buf()
}

/// `<workspace>/<dir>/tests/data/<name>`: a crate's copied test data (`dir` is the crate's
/// folder, e.g. `functions/github-webhook`).
pub fn test_data(dir: &str, name: &str) -> PathBuf {
    workspace_root().join(dir).join("tests/data").join(name)
}

/// A copied fixture, as raw bytes (signatures are over the exact bytes).
pub fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let path = test_data(dir, name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

/// A copied JSON fixture, parsed.
pub fn fixture_json(dir: &str, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(dir, name))
        .unwrap_or_else(|e| panic!("fixture {dir}/{name} is not JSON: {e}"))
}

/// `<workspace>/events/<function>/<name>`: a sample Lambda event.
pub fn event_path(function: &str, name: &str) -> PathBuf {
    workspace_root().join("events").join(function).join(name)
}

/// The test GitHub App key pair in `shared/tests/data`: the private half, or the public one.
pub fn github_app_key_path(public: bool) -> PathBuf {
    let name = if public {
        "github-app-test-key.pub.pem"
    } else {
        "github-app-test-key.pem"
    };
    test_data("shared", name)
}

/// The test GitHub App's private key (PEM).
pub fn github_app_key() -> String {
    let path = github_app_key_path(false);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the test App key {}: {e}", path.display()))
}
