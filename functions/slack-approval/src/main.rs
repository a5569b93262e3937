//! Lambda entry point of the Slack approval function: configuration and clients are built once
//! at cold start; every invocation runs [`slack_approval::handle`].

use shipgate::aws::{bootstrap, lambda};
use slack_approval::{SlackApproval, Workspace};

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_lambda_tracing();
    let boot = bootstrap::slack_approval().await?;
    let workspace = Workspace {
        team_id: boot.team_id,
        app_id: boot.app_id,
    };
    let app = SlackApproval::new(boot.services, boot.signing_secret, workspace, boot.slack);
    lambda::run_http(|req| slack_approval::handle(&app, req)).await
}
