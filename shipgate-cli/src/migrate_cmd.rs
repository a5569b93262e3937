//! `shipgate migrate --data DIR` (or `--stack NAME`): moves the store's records to the current schema (see
//! `shipgate::store::migrate`). `shipgate serve` does the same at start; this runs it on
//! demand, e.g. on a copy of the data directory. Idempotent: a second run reports nothing to
//! do.

use std::io::Write;

use shipgate::store::migrate::{migrate, summary};
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

pub async fn run(state: &State, json: bool) -> Result<(), CliError> {
    let repo = state.repo()?;
    let report = migrate(&repo).await.map_err(CliError::Migrate)?;
    let line = if json {
        serde_json::to_string(&report).map_err(|e| CliError::Output(e.into()))?
    } else {
        summary(&report)
    };
    writeln!(std::io::stdout().lock(), "{line}").map_err(CliError::Output)
}
