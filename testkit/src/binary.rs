//! The `shipgate` binary, for tests that run it as an operator would.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for the binaries of the package under test, and it
//! does not build the binaries of dependencies. So the binary is found where cargo puts it —
//! beside the test executable's `deps/` folder — and built (or brought up to date) with the
//! same cargo, target directory and profile the first time a test asks for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
    let binary = profile_dir.join(format!("shipgate{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}
