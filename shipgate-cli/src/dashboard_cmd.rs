//! `shipgate dashboard`: the dashboard's pages on their own (see [`shipgate_cli::dashboard`]).

use std::net::SocketAddr;
use std::sync::Arc;

use shipgate::config::Vars;
use shipgate::service::Services;
use shipgate_cli::dashboard::DashboardConfig;
use shipgate_cli::error::CliError;
use shipgate_cli::signals::Signals;
use shipgate_cli::state::State;

/// `shipgate dashboard`: the same pages, served on their own from a data directory or a
/// deployed stack's table (read with the operator's own AWS credentials), until SIGINT or
/// SIGTERM. On AWS this is how the dashboard is seen: nothing public is exposed.
pub async fn run(
    state: &State,
    policy_file: Option<&std::path::Path>,
    listen: SocketAddr,
    vars: &dyn Vars,
) -> Result<(), CliError> {
    let dashboard = DashboardConfig::from_vars(vars, listen).map_err(CliError::Dashboard)?;
    let policy = Arc::new(state.policy(policy_file).await?);
    let services = Services {
        repo: state.repo()?,
        policy,
        github: None,
        publisher: Arc::new(shipgate_cli::notifier_task::DiscardPublisher),
        clock: Arc::new(shipgate::service::SystemClock),
        policy_source: None,
    };
    let signals = Signals::install().map_err(CliError::Serve)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: listen,
            source,
        })?;
    let at = listener.local_addr().map_err(CliError::Serve)?;
    tracing::info!(dashboard = %at, auth = ?dashboard.auth, "the dashboard is serving");
    eprintln!("shipgate dashboard on http://{at}/ (Ctrl-C to stop)");
    axum::serve(listener, dashboard.router(services))
        .with_graceful_shutdown(signals.wait())
        .await
        .map_err(CliError::Serve)
}
