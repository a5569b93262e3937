//! The `shipgate` binary, for tests that run it as an operator would.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for the binaries of the package under test, and it
//! does not build the binaries of dependencies. So the binary is found where cargo puts it —
//! beside the test executable's `deps/` folder. When it is missing, or older than a source
//! file or manifest of the crates it is built from (`cargo test -p tests` alone, after an
//! edit), it is built with the same cargo, target directory and profile the first time a test
//! asks for it. After `cargo test --workspace` it is fresh (shipgate-cli's own integration
//! test makes cargo build it with the test build's features) and used as it is: building it again
//! with `-p shipgate-cli` alone would resolve other features and rebuild it for nothing. Either
//! way it has the `aws` feature (the tests package asks for it), so tests can drive the
//! operator commands against a stack on moto.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The path of an up-to-date `shipgate` binary of this build.
pub fn shipgate_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let binary = profile_dir.join(format!("shipgate{}", std::env::consts::EXE_SUFFIX));
    if is_fresh(&binary) && has_aws_feature(&binary) {
        return binary;
    }
    let target_dir = profile_dir
        .parent()
        .expect("the profile folder lives in the target folder");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(crate::workspace_root())
        .args([
            "build",
            "--quiet",
            "--package",
            "shipgate-cli",
            "--bin",
            "shipgate",
            // The operator commands against an AWS stack, which the tests drive on moto.
            "--features",
            "aws",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(other) => {
            cargo.args(["--profile", other]);
        }
        None => {}
    }
    let status = cargo
        .status()
        .expect("running cargo build for the shipgate binary");
    assert!(status.success(), "building the shipgate binary failed");
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}

/// Whether `binary` was built with the `aws` feature (a plain `cargo build -p shipgate-cli`
/// leaves one without it, newer than every source): its `status` takes `--stack`.
fn has_aws_feature(binary: &Path) -> bool {
    Command::new(binary)
        .args(["status", "--help"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--stack"))
}

/// Whether `binary` exists and is newer than every source file and manifest it is built from.
fn is_fresh(binary: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let root = crate::workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for file in ["Cargo.toml", "Cargo.lock"] {
        newest = newest.max(modified(&root.join(file)).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    let mut crates = vec![root.join("shared"), root.join("shipgate-cli")];
    if let Ok(functions) = std::fs::read_dir(root.join("functions")) {
        crates.extend(functions.flatten().map(|e| e.path()));
    }
    for dir in crates {
        newest = newest.max(modified(&dir.join("Cargo.toml")).unwrap_or(SystemTime::UNIX_EPOCH));
        newest = newest.max(newest_in(&dir.join("src")));
    }
    // Files the binary embeds with include_str!: the app manifests and the demo's sample events.
    for embedded in ["manifests", "events"] {
        newest = newest.max(newest_in(&root.join(embedded)));
    }
    built >= newest
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest_in(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let at = if path.is_dir() {
            newest_in(&path)
        } else {
            modified(&path).unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(at);
    }
    newest
}
