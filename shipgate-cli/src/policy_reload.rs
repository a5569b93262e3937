//! `shipgate serve` takes a changed policy without a restart: on SIGHUP, and when the policy
//! file changes (its modification time or size, looked at every [`POLL`]). A file that fails
//! validation is not loaded: the policy in force stays, and the errors are logged and posted
//! to the ops channel as a `policy-reload` job notice. Every event is handled under the policy
//! current when it arrived (see `shipgate::service::Services::refreshed`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use shipgate::domain::policy::{Policy, PolicyLoadError};
use shipgate::notify::{Notification, NotificationBody, Publisher};
use shipgate::service::PolicySource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the file is looked at. A change applies within this (at once on SIGHUP).
pub const POLL: Duration = Duration::from_secs(2);

/// What identifies a version of the file without reading it.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Loads the file and, when it is valid, puts it in force. Returns whether it was loaded.
pub async fn reload(
    path: &PathBuf,
    source: &PolicySource,
    publisher: &dyn Publisher,
    why: &str,
) -> bool {
    match Policy::load(path) {
        Ok(policy) => {
            let environments = policy.environments().count();
            source.replace(Arc::new(policy));
            tracing::info!(policy = %path.display(), environments, why, "policy reloaded");
            true
        }
        Err(e) => {
            let summary = match &e {
                PolicyLoadError::Read { .. } => format!("the policy file could not be read: {e}"),
                PolicyLoadError::Invalid(errors) => {
                    format!(
                        "the new policy is not valid; the previous one stays in force:\n{errors}"
                    )
                }
            };
            tracing::error!(policy = %path.display(), why, error = %summary, "policy not reloaded");
            let notice = Notification::new(
                Timestamp::now(),
                NotificationBody::Job {
                    job: "policy-reload".into(),
                    ok: false,
                    summary,
                    details: serde_json::Value::Null,
                    page: false,
                },
            );
            if let Err(e) = publisher.publish(&notice).await {
                tracing::error!(error = %e, "could not announce the failed policy reload");
            }
            false
        }
    }
}

/// Watches for SIGHUP and changes of the file until `stop`.
pub fn spawn(
    path: PathBuf,
    source: Arc<PolicySource>,
    publisher: Arc<dyn Publisher>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the policy file is still watched");
                None
            }
        };
        let mut seen = stamp(&path);
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hangup => {
                    seen = stamp(&path);
                    reload(&path, &source, publisher.as_ref(), "SIGHUP").await;
                }
                () = tokio::time::sleep(POLL) => {
                    let now = stamp(&path);
                    if now.is_some() && now != seen {
                        seen = now;
                        reload(&path, &source, publisher.as_ref(), "the file changed").await;
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    })
}
