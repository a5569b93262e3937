//! The `shipgate` binary's command surface, run as a user runs it. Having an integration test
//! also makes `cargo test` build the binary itself, which the end-to-end tests in `tests/` run.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shipgate");

#[test]
fn help_lists_the_operator_commands_and_not_the_load_tool() {
    let out = Command::new(BIN)
        .arg("--help")
        .env_remove("RUST_LOG")
        .output()
        .expect("run shipgate --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "serve",
            "policy",
            "status",
            "history",
            "incidents",
            "demo",
            "job",
            "backup",
            "rollback",
            "unlock",
            "migrate",
            "setup",
            "analysis",
            "dora",
            "dashboard",
            "help"
        ],
        "{help}"
    );
}

#[test]
fn the_load_tool_is_not_a_shipgate_command() {
    let out = Command::new(BIN)
        .arg("load")
        .output()
        .expect("run shipgate load");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'load'"));
}
