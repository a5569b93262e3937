//! The typed repository: shipgate's records on top of the [`ItemStore`] port.
//!
//! Single-table layout (the same keys on DynamoDB and SQLite):
//!
//! | record | pk | sk | timeline pk / sk |
//! |---|---|---|---|
//! | deployment | `DEP#{id}` | `DEP` | `ENV#{env}#DEPLOYS` / `{ms}#{id}` |
//! | scope lock | `SCOPE#{repo}#{env}` | `LOCK` | |
//! | scope heads (current, last known good) | `SCOPE#{repo}#{env}` | `HEADS` | |
//! | repositories of an environment (index) | `ENV#{env}` | `SCOPE#{repo}` | |
//! | audit event | `AUDIT#{deployment}` | `{ms}#{uuid}` | `ENV#{env}#AUDIT` / `{ms}#{uuid}` |
//! | run → deployment | `RUN#{run_id}` | `ENV#{env}` | |
//! | GitHub deployment → deployment | `GHDEP#{github id}` | `MAP` | |
//! | sha facts | `SHA#{repo}@{sha}` | `OK#{env}`, `CI#{workflow}`, `COMMIT` | |
//! | incident | `INC#{id}` | `INC` | `ENV#{env}#INCIDENTS` / `{ms}#{id}` |
//! | incident log entry (see [`IncidentEvent`]) | `INC#{id}` | `LOG#{version}` | `ENV#{env}#INCIDENT_LOG` / `{ms}#{id}#{version}` |
//! | open incident of a repository (index) | `SCOPE#{repo}#{env}` | `OPEN#{id}` | |
//! | queued request of a scope (see [`QueueEntry`]) | `SCOPE#{repo}#{env}` | `QUEUE#{deployment}` | |
//! | open environment-level incident (index) | `ENV#{env}` | `OPEN#{id}` | |
//! | idempotency key (pending claim, then confirmed; see [`Repo::begin_event`]) | `IDEM#{scope}#{key}` | `IDEM` (expires) | |
//! | rollback drill of a scope | `META#rollback-drill` | `{repo}#{env}` | |
//! | schema version (see [`super::migrate`]) | `META#schema` | `version` | |
//! | misc facts | `META#{kind}` | `{name}` | |
//!
//! `{ms}` is zero-padded unix milliseconds, so sort-key order is time order. `{repo}` is
//! `owner/name`.
//!
//! A [`Scope`] is a repository and one of its environments: the lock, the heads and the open
//! incidents a repository's deployment caused are per scope, so two repositories deploying
//! to `production` never hold each other's lock nor roll back to each other's sha. The
//! timelines (`ENV#{env}#DEPLOYS`, `#AUDIT`, `#INCIDENTS`) stay per environment for roll-ups;
//! readers filter them by repository where they need one. Incidents no single repository's
//! deployment can be blamed for are indexed at environment level and block every repository
//! of the environment.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::item::{Condition, Item, ItemStore, Query, StoreError, Timeline, Write};
use crate::domain::deployment::{AuditEvent, Deployment, EnvironmentHeads, Head, State};
use crate::domain::ids::{RepoName, Sha};
use crate::domain::incident::{Incident, IncidentEvent};
use crate::domain::scope::Scope;

/// Errors of the typed layer.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record changed since it was read; re-read and retry.
    #[error("{what} changed concurrently")]
    Stale { what: String },
    #[error("stored {what} is not valid: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// How creating a gated deployment went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created,
    /// The scope's lock is held by another deployment.
    Locked {
        holder: String,
    },
    /// A deployment with this id exists already.
    Exists,
    /// Another request for the same run and environment was gated first (its deployment now
    /// holds the run's pointer).
    RunTaken,
}

fn ms_key(t: Timestamp) -> String {
    format!("{:013}", t.as_millisecond().max(0))
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Our records are plain structs of strings, numbers and timestamps: serialisation cannot fail.
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("serialising a record: {e}"))
}

fn from_item<T: DeserializeOwned>(item: &Item, what: &str) -> Result<T, RepoError> {
    serde_json::from_str(&item.data).map_err(|source| RepoError::Corrupt {
        what: what.to_string(),
        source,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    holder: String,
    since: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pointer {
    deployment_id: String,
}

/// One UTC day's (or calendar week's) DORA reports of an environment, as the `dora-report`
/// job kept them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoraDay {
    pub day: jiff::civil::Date,
    pub reports: Vec<crate::domain::dora::DoraReport>,
}

/// One push (`push` webhook): the commits that moved a branch from `before` to `after`, with
/// their timestamps. Kept in `after`'s sha partition, so the commits a deployment of `after`
/// carries are found by walking pushes back from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    pub repo: RepoName,
    /// The branch's previous head; `None` for a new branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Sha>,
    pub after: Sha,
    pub commits: Vec<PushedCommit>,
    /// When shipgate received it (absent on records kept before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
}

/// A commit of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedCommit {
    pub sha: Sha,
    pub at: Timestamp,
}

/// What is known of one sha, from one read of its partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShaRecord {
    /// Its commit time (first sighting).
    pub committed_at: Option<Timestamp>,
    /// Environments where its deployment succeeded.
    pub succeeded_in: BTreeSet<String>,
    /// The pushes that made it a branch's head.
    pub pushes: Vec<PushRecord>,
}

/// A fact about a sha: CI outcome, commit time, success in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShaFact {
    pub repo: RepoName,
    pub sha: Sha,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// shipgate's typed access to state.
#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn ItemStore>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").finish_non_exhaustive()
    }
}

fn dep_pk(id: &str) -> String {
    format!("DEP#{id}")
}

fn env_pk(env: &str) -> String {
    format!("ENV#{env}")
}

fn scope_pk(scope: &Scope) -> String {
    scope.key()
}

/// The pseudo-environment under which incidents of alerts that named no policy environment
/// are kept (timeline, log and open index); their labels are kept on the incident.
pub const UNKNOWN_ENVIRONMENT: &str = "_unknown";

/// Where an incident's open-index entry lives: its scope when it has one, else its
/// environment ([`UNKNOWN_ENVIRONMENT`] for unmapped alerts).
pub fn open_index_pk(incident: &Incident) -> String {
    match incident.scope() {
        Some(scope) => scope_pk(&scope),
        None => env_pk(
            incident
                .environment
                .as_deref()
                .unwrap_or(UNKNOWN_ENVIRONMENT),
        ),
    }
}

fn lock_put(scope: &Scope, holder: &str, now: Timestamp) -> Write {
    Write::Put {
        item: Item {
            pk: scope_pk(scope),
            sk: "LOCK".into(),
            version: 1,
            expires_at: None,
            timeline: None,
            data: to_json(&LockRecord {
                holder: holder.to_string(),
                since: now,
            }),
        },
        condition: Condition::Absent { now: i64::MIN },
    }
}

/// What one read of a scope's partition says (see [`Repo::scope_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeState {
    /// The deployment holding the scope's lock.
    pub lock_holder: Option<String>,
    /// The open incidents indexed in the scope (its repository's own).
    pub open_incidents: Vec<crate::domain::incident::OpenIncident>,
    /// What the scope runs now (its heads' `current`), which says when the window of a
    /// deployment verifying there ends.
    pub current: Option<Head>,
    /// What a rollback returns the scope to (its heads' `last_known_good`).
    pub last_known_good: Option<Head>,
    /// The requests waiting for the lock, in arrival order.
    pub queue: Vec<QueueEntry>,
}

/// A request waiting in its scope's queue: written with its deployment (state `queued`) and
/// deleted in the same transaction that takes the deployment out of the queue, so the queue
/// holds exactly the queued deployments. It lives in the scope's partition, which the gate
/// reads anyway: a request learns its place in line without an extra read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub deployment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
    pub git_ref: String,
    pub sha: Sha,
    pub since: Timestamp,
    pub until: Timestamp,
}

impl QueueEntry {
    fn of(dep: &Deployment) -> Option<QueueEntry> {
        let ticket = dep.queued.as_ref()?;
        Some(QueueEntry {
            deployment_id: dep.id.clone(),
            run_id: dep.run_id,
            git_ref: dep.git_ref.clone(),
            sha: dep.sha.clone(),
            since: ticket.since,
            until: ticket.until,
        })
    }
}

/// Arrival order: by time, then by id (time-ordered too).
fn sort_queue(queue: &mut [QueueEntry]) {
    queue.sort_by(|a, b| {
        (a.since, a.deployment_id.as_str()).cmp(&(b.since, b.deployment_id.as_str()))
    });
}

fn queue_sk(deployment_id: &str) -> String {
    format!("QUEUE#{deployment_id}")
}

/// What saving a deployment found out about its scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saved {
    /// The save released the scope's lock and requests are waiting for it: the caller should
    /// let the queue advance.
    pub queue_waiting: bool,
}

/// The entry listing a repository among an environment's ([`Repo::repositories_in`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScopeEntry {
    repo: RepoName,
}

fn audit_writes(events: &[AuditEvent]) -> Vec<Write> {
    events
        .iter()
        .map(|e| {
            let sk = format!("{}#{}", ms_key(e.at), uuid::Uuid::now_v7().simple());
            Write::Put {
                item: Item {
                    pk: format!("AUDIT#{}", e.deployment_id),
                    sk: sk.clone(),
                    version: 1,
                    expires_at: None,
                    timeline: Some(Timeline {
                        pk: format!("ENV#{}#AUDIT", e.environment),
                        sk,
                    }),
                    data: to_json(e),
                },
                // Audit lines are immutable: never overwrite one.
                condition: Condition::Absent { now: i64::MIN },
            }
        })
        .collect()
}

/// A record pointing at a deployment (run → deployment, GitHub deployment → deployment).
/// Pointers are overwritten freely: the latest link wins.
fn pointer(pk: String, sk: impl Into<String>, deployment_id: impl Into<String>) -> Write {
    Write::Put {
        item: Item {
            pk,
            sk: sk.into(),
            version: 1,
            expires_at: None,
            timeline: None,
            data: to_json(&Pointer {
                deployment_id: deployment_id.into(),
            }),
        },
        condition: Condition::None,
    }
}

/// How claiming an inbound event went ([`Repo::begin_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an acquired claim must be confirmed or released"]
pub enum Claim {
    /// This attempt holds the event: process it, then confirm or release the claim.
    Acquired,
    /// The event was processed before: nothing to do.
    Done,
    /// Another attempt claimed the event less than a lease ago and has not finished: answer
    /// so that the sender tries again later.
    InProgress,
}

/// How long an unconfirmed inbound claim keeps other attempts out (longer than one webhook
/// or notifier invocation runs).
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(2 * 60);

const IDEM_SK: &str = "IDEM";

fn idem_pk(scope: &str, key: &str) -> String {
    format!("IDEM#{scope}#{key}")
}

/// What a claim item holds. Claims written before leases existed (`{"at": …}` only) read as
/// confirmed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimRecord {
    at: Timestamp,
    /// Names the attempt that wrote the claim, so a write whose answer was lost can be told
    /// apart from another attempt's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

/// Whose claim a key holds after a claim attempt.
enum ClaimSeen {
    Ours,
    Other(ClaimRecord),
}

fn claim_item(
    scope: &str,
    key: &str,
    now: Timestamp,
    ttl: std::time::Duration,
    record: &ClaimRecord,
) -> Item {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    Item {
        pk: idem_pk(scope, key),
        sk: IDEM_SK.into(),
        version: 1,
        expires_at: Some(now.as_second().saturating_add(ttl)),
        timeline: None,
        data: to_json(record),
    }
}

fn deployment_item(dep: &Deployment) -> Item {
    Item {
        pk: dep_pk(&dep.id),
        sk: "DEP".into(),
        version: dep.version,
        expires_at: None,
        timeline: Some(Timeline {
            pk: format!("ENV#{}#DEPLOYS", dep.environment),
            sk: format!("{}#{}", ms_key(dep.created_at), dep.id),
        }),
        data: to_json(dep),
    }
}

impl Repo {
    pub fn new(store: Arc<dyn ItemStore>) -> Self {
        Repo { store }
    }

    pub fn store(&self) -> &Arc<dyn ItemStore> {
        &self.store
    }

    /// Claims an inbound event id (GitHub delivery, Slack action, alert notification, SNS
    /// message, schedule tick...) for this attempt, before processing it.
    ///
    /// The claim is written *pending* for `lease`: while it is pending, other attempts get
    /// [`Claim::InProgress`]; once the lease runs out the claim counts as absent and the next
    /// attempt takes the event over, so a claim whose holder crashed, or could neither confirm
    /// nor release it, delays the event by one lease instead of swallowing it.
    ///
    /// After [`Claim::Acquired`] the caller must settle the claim:
    /// - processed, or failed in a way no redelivery can fix: [`Repo::confirm_event`] with the
    ///   long dedupe TTL (a failed confirm is logged; the worst case is one reprocessing after
    ///   the lease, which the idempotent use cases absorb);
    /// - failed in a way a redelivery could fix: [`Repo::release_event`].
    ///
    /// A backend error on the write does not say whether it landed, so the claim is read
    /// back: this attempt's token there means the claim is ours, another attempt's claim
    /// answers as that claim does, and no claim at all means the write did not land and it is
    /// tried once more.
    pub async fn begin_event(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Claim, RepoError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let record = ClaimRecord {
            at: now,
            token: Some(token.clone()),
            pending: true,
        };
        match self.put_claim(scope, key, now, lease, &record).await? {
            ClaimSeen::Ours => Ok(Claim::Acquired),
            ClaimSeen::Other(other) if other.pending => Ok(Claim::InProgress),
            ClaimSeen::Other(_) => Ok(Claim::Done),
        }
    }

    /// Marks an event claimed with [`Repo::begin_event`] as processed: redeliveries inside
    /// `ttl` get [`Claim::Done`].
    pub async fn confirm_event(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: std::time::Duration,
    ) -> Result<(), RepoError> {
        let record = ClaimRecord {
            at: now,
            token: None,
            pending: false,
        };
        self.store
            .write(Write::Put {
                item: claim_item(scope, key, now, ttl, &record),
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// Claims a key for `ttl` outright, with no pending phase: a guard that holds until it
    /// expires or is released (the notifier's first-post lock), not an inbound event (those
    /// use [`Repo::begin_event`]). Returns `true` when this call took it. A backend error is
    /// resolved by reading the key back, as in [`Repo::begin_event`].
    pub async fn claim_event(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: std::time::Duration,
    ) -> Result<bool, RepoError> {
        let record = ClaimRecord {
            at: now,
            token: Some(uuid::Uuid::new_v4().simple().to_string()),
            pending: false,
        };
        Ok(matches!(
            self.put_claim(scope, key, now, ttl, &record).await?,
            ClaimSeen::Ours
        ))
    }

    /// Writes `record` unless a live claim exists, and finds out whose claim is there when
    /// the backend's answer was lost.
    async fn put_claim(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: std::time::Duration,
        record: &ClaimRecord,
    ) -> Result<ClaimSeen, RepoError> {
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let put = self
                .store
                .write(Write::Put {
                    item: claim_item(scope, key, now, ttl, record),
                    condition: Condition::Absent {
                        now: now.as_second(),
                    },
                })
                .await;
            let error = match put {
                Ok(()) => return Ok(ClaimSeen::Ours),
                Err(e) => e,
            };
            let conflicted = matches!(error, StoreError::ConditionFailed { .. });
            // What is there now decides; a read that fails leaves the write's error standing.
            let stored = match self.read_claim(scope, key, now).await {
                Ok(stored) => stored,
                Err(read) if conflicted => return Err(read),
                Err(_) => return Err(error.into()),
            };
            match stored {
                Some(found) if found.token.is_some() && found.token == record.token => {
                    return Ok(ClaimSeen::Ours)
                }
                Some(found) => return Ok(ClaimSeen::Other(found)),
                // Gone again (expired or released since the condition failed), or our write
                // never landed: one more try.
                None if attempts_left > 0 => continue,
                None if conflicted => {
                    return Err(RepoError::Stale {
                        what: format!("claim {scope}#{key}"),
                    })
                }
                None => return Err(error.into()),
            }
        }
    }

    /// The live claim under a key, if any.
    async fn read_claim(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<ClaimRecord>, RepoError> {
        let Some(item) = self.store.get(&idem_pk(scope, key), IDEM_SK).await? else {
            return Ok(None);
        };
        if item.is_expired(now.as_second()) {
            return Ok(None);
        }
        let record = serde_json::from_str(&item.data).map_err(|source| RepoError::Corrupt {
            what: format!("claim {scope}#{key}"),
            source,
        })?;
        Ok(Some(record))
    }

    /// Gives an event id back, so a redelivery is processed again (used when processing
    /// failed after the claim in a way a redelivery could fix). A backend failure is tried
    /// once more: a claim left behind costs the event a lease's delay.
    pub async fn release_event(&self, scope: &str, key: &str) -> Result<(), RepoError> {
        let delete = || Write::Delete {
            pk: idem_pk(scope, key),
            sk: IDEM_SK.into(),
            condition: Condition::None,
        };
        match self.store.write(delete()).await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "releasing a claim failed; trying once more");
                self.store.write(delete()).await?;
            }
            other => other?,
        }
        Ok(())
    }

    /// Stores a new deployment with its audit events. When its state holds the lock, its
    /// scope's lock is taken in the same transaction: either both land or neither. The
    /// repository is listed among the environment's in the same transaction.
    pub async fn create_deployment(
        &self,
        dep: &mut Deployment,
        events: &[AuditEvent],
        now: Timestamp,
    ) -> Result<Created, RepoError> {
        self.create(dep, events, now, None).await
    }

    /// [`Repo::create_deployment`] for a protection-rule request: the run's pointer
    /// (`RUN#{run}` / `ENV#{env}`) is written only if it is still what the gate read —
    /// absent (`None`), or at `pointer_version` for a re-run — so of two requests for one run
    /// and environment arriving together exactly one creates a deployment; the other gets
    /// [`Created::RunTaken`]. The pointer is written in the same transaction anyway, so this
    /// costs no extra round trip.
    pub async fn create_gated(
        &self,
        dep: &mut Deployment,
        events: &[AuditEvent],
        now: Timestamp,
        pointer_version: Option<u64>,
    ) -> Result<Created, RepoError> {
        let expect = match pointer_version {
            Some(v) => Condition::Version(v),
            None => Condition::Absent { now: i64::MIN },
        };
        self.create(dep, events, now, Some(expect)).await
    }

    async fn create(
        &self,
        dep: &mut Deployment,
        events: &[AuditEvent],
        now: Timestamp,
        run_condition: Option<Condition>,
    ) -> Result<Created, RepoError> {
        dep.version = 1;
        let mut writes = vec![Write::Put {
            item: deployment_item(dep),
            condition: Condition::Absent { now: i64::MIN },
        }];
        let scope = dep.scope();
        let takes_lock = dep.state.holds_lock();
        if takes_lock {
            writes.push(lock_put(&scope, &dep.id, now));
        }
        if dep.state == State::Queued {
            if let Some(entry) = QueueEntry::of(dep) {
                writes.push(Write::Put {
                    item: Item {
                        pk: scope_pk(&scope),
                        sk: queue_sk(&dep.id),
                        version: 1,
                        expires_at: None,
                        timeline: None,
                        data: to_json(&entry),
                    },
                    condition: Condition::None,
                });
            }
        }
        writes.push(Write::Put {
            item: Item {
                pk: env_pk(dep.environment.as_str()),
                sk: format!("SCOPE#{}", dep.repo),
                version: 1,
                expires_at: None,
                timeline: None,
                data: to_json(&ScopeEntry {
                    repo: dep.repo.clone(),
                }),
            },
            condition: Condition::None,
        });
        if let Some(run_id) = dep.run_id {
            let mut write = pointer(
                format!("RUN#{run_id}"),
                env_pk(dep.environment.as_str()),
                dep.id.clone(),
            );
            if let (
                Some(condition),
                Write::Put {
                    item,
                    condition: slot,
                },
            ) = (run_condition, &mut write)
            {
                if let Condition::Version(v) = condition {
                    item.version = v + 1;
                }
                *slot = condition;
            }
            writes.push(write);
        }
        writes.extend(audit_writes(events));
        match self.store.transact(writes).await {
            Ok(()) => Ok(Created::Created),
            Err(StoreError::ConditionFailed { key }) if key.starts_with("DEP#") => {
                Ok(Created::Exists)
            }
            Err(StoreError::ConditionFailed { key })
                if key.starts_with("RUN#") && run_condition.is_some() =>
            {
                Ok(Created::RunTaken)
            }
            // DynamoDB cancels a transaction that touches an item another transaction is
            // writing (the other request for the same run, still in flight) as a conflict,
            // without saying which condition would have failed. When the run's pointer shows
            // up as someone else's moments later, the run was taken.
            Err(StoreError::Conflict)
                if run_condition.is_some()
                    && self.run_taken_by_other(dep, run_condition.as_ref()).await? =>
            {
                Ok(Created::RunTaken)
            }
            Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) if takes_lock => {
                let holder = self.lock_holder(&scope).await?.unwrap_or_default();
                Ok(Created::Locked { holder })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Saves a changed deployment (optimistic: fails with [`RepoError::Stale`] when someone
    /// else saved it first) together with its audit events, releasing its scope's lock
    /// in the same transaction when the new state no longer holds it, and recording heads.
    ///
    /// A deployment leaving the queue ([`Deployment::left_queue`]) has its queue entry
    /// deleted in the same transaction, and takes the scope's lock there when its new state
    /// holds it; when another deployment holds the lock, the save fails as stale.
    ///
    /// Releasing the lock reads the scope's partition (one query, where a lookup of the lock
    /// alone was one read before) so the caller learns in the same round trip whether
    /// requests are waiting.
    pub async fn save_deployment(
        &self,
        dep: &mut Deployment,
        events: &[AuditEvent],
    ) -> Result<Saved, RepoError> {
        let expected = dep.version;
        dep.version = expected + 1;
        let mut saved = Saved::default();
        let scope = dep.scope();
        let mut writes = vec![Write::Put {
            item: deployment_item(dep),
            condition: Condition::Version(expected),
        }];
        if dep.left_queue {
            writes.push(Write::Delete {
                pk: scope_pk(&scope),
                sk: queue_sk(&dep.id),
                condition: Condition::None,
            });
            if dep.state.holds_lock() {
                writes.push(lock_put(&scope, &dep.id, dep.updated_at));
            }
        } else if !dep.state.holds_lock() {
            let items = self
                .store
                .query(Query::Partition {
                    pk: scope_pk(&scope),
                    sk_prefix: String::new(),
                    descending: false,
                    limit: None,
                })
                .await?;
            let mut releases = false;
            let mut waiting = false;
            for item in items {
                if item.sk == "LOCK" {
                    let rec: LockRecord = from_item(&item, "lock")?;
                    if rec.holder == dep.id {
                        releases = true;
                        writes.push(Write::Delete {
                            pk: item.pk,
                            sk: item.sk,
                            condition: Condition::Version(item.version),
                        });
                    }
                } else if item.sk.starts_with("QUEUE#") {
                    waiting = true;
                }
            }
            saved.queue_waiting = releases && waiting;
        }
        if let Some(gh) = dep.github_deployment_id {
            writes.push(pointer(format!("GHDEP#{gh}"), "MAP", dep.id.clone()));
        }
        if let Some(rb) = dep.rollback.as_ref().and_then(|r| r.github_deployment_id) {
            if Some(rb) != dep.github_deployment_id {
                writes.push(pointer(format!("GHDEP#{rb}"), "MAP", dep.id.clone()));
            }
        }
        writes.extend(audit_writes(events));
        match self.store.transact(writes).await {
            Ok(()) => {
                dep.left_queue = false;
                Ok(saved)
            }
            Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => {
                dep.version = expected;
                Err(RepoError::Stale {
                    what: format!("deployment {}", dep.id),
                })
            }
            Err(e) => {
                dep.version = expected;
                Err(e.into())
            }
        }
    }

    /// Deletes a queue entry whose deployment is gone or no longer queued.
    pub async fn remove_queue_entry(
        &self,
        scope: &Scope,
        deployment_id: &str,
    ) -> Result<(), RepoError> {
        self.store
            .write(Write::Delete {
                pk: scope_pk(scope),
                sk: queue_sk(deployment_id),
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// Every deployment gated for a workflow run, one per environment its jobs asked for.
    pub async fn deployments_for_run(&self, run_id: u64) -> Result<Vec<Deployment>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: format!("RUN#{run_id}"),
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await?;
        let mut found = Vec::new();
        for item in &items {
            let p: Pointer = from_item(item, "pointer")?;
            if let Some(dep) = self.get_deployment(&p.deployment_id).await? {
                found.push(dep);
            }
        }
        Ok(found)
    }

    /// The requests waiting in a scope's queue, in arrival order.
    pub async fn queue(&self, scope: &Scope) -> Result<Vec<QueueEntry>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: scope_pk(scope),
                sk_prefix: "QUEUE#".into(),
                descending: false,
                limit: None,
            })
            .await?;
        let mut queue = items
            .iter()
            .map(|i| from_item::<QueueEntry>(i, "queue entry"))
            .collect::<Result<Vec<_>, _>>()?;
        sort_queue(&mut queue);
        Ok(queue)
    }

    pub async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>, RepoError> {
        match self.store.get(&dep_pk(id), "DEP").await? {
            Some(item) => {
                let mut dep: Deployment = from_item(&item, "deployment")?;
                dep.version = item.version;
                Ok(Some(dep))
            }
            None => Ok(None),
        }
    }

    async fn follow(&self, pk: &str, sk: &str) -> Result<Option<Deployment>, RepoError> {
        match self.store.get(pk, sk).await? {
            Some(item) => {
                let p: Pointer = from_item(&item, "pointer")?;
                self.get_deployment(&p.deployment_id).await
            }
            None => Ok(None),
        }
    }

    /// The deployment gated for workflow run `run_id` in `environment`, with the version of
    /// the run's pointer (what [`Repo::create_gated`] expects for a re-run).
    /// Whether another deployment than `dep` holds the pointer of `dep`'s run and environment,
    /// looking twice, 50 ms apart (a conflicting transaction may still be committing). Only a
    /// cancelled transaction pays these reads.
    /// `expected` is the condition the create put on the pointer: absent, or at a version (a
    /// re-run replacing an earlier attempt's pointer).
    async fn run_taken_by_other(
        &self,
        dep: &Deployment,
        expected: Option<&Condition>,
    ) -> Result<bool, RepoError> {
        let Some(run_id) = dep.run_id else {
            return Ok(false);
        };
        for attempt in 1..=2u64 {
            let pointer = self.run_pointer(run_id, dep.environment.as_str()).await?;
            let moved = match (pointer, expected) {
                (Some((holder, _)), _) if holder.id == dep.id => return Ok(false),
                (Some((_, version)), Some(Condition::Version(v))) => version != *v,
                (Some(_), _) => true,
                (None, _) => false,
            };
            if moved {
                return Ok(true);
            }
            if attempt == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(false)
    }

    pub async fn run_pointer(
        &self,
        run_id: u64,
        environment: &str,
    ) -> Result<Option<(Deployment, u64)>, RepoError> {
        let Some(item) = self
            .store
            .get(&format!("RUN#{run_id}"), &env_pk(environment))
            .await?
        else {
            return Ok(None);
        };
        let p: Pointer = from_item(&item, "pointer")?;
        Ok(self
            .get_deployment(&p.deployment_id)
            .await?
            .map(|d| (d, item.version)))
    }

    /// The deployment gated for workflow run `run_id` in `environment`.
    pub async fn deployment_for_run(
        &self,
        run_id: u64,
        environment: &str,
    ) -> Result<Option<Deployment>, RepoError> {
        self.follow(&format!("RUN#{run_id}"), &env_pk(environment))
            .await
    }

    /// The deployment a GitHub deployment id belongs to (its own, or its rollback's).
    pub async fn deployment_for_github(
        &self,
        github_deployment_id: u64,
    ) -> Result<Option<Deployment>, RepoError> {
        self.follow(&format!("GHDEP#{github_deployment_id}"), "MAP")
            .await
    }

    /// Links a workflow run (in one environment) to a deployment without touching the
    /// record — the rollback workflow's run belongs to the deployment it rolls back — only if
    /// the run has no deployment there yet: of two requests for one rollback run arriving
    /// together, one links it (`true`).
    pub async fn link_run_once(
        &self,
        run_id: u64,
        environment: &str,
        deployment_id: &str,
    ) -> Result<bool, RepoError> {
        let mut write = pointer(
            format!("RUN#{run_id}"),
            env_pk(environment),
            deployment_id.to_string(),
        );
        if let Write::Put { condition, .. } = &mut write {
            *condition = Condition::Absent { now: i64::MIN };
        }
        match self.store.write(write).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Links a GitHub deployment id to a deployment without touching the record.
    pub async fn link_github_deployment(
        &self,
        github_deployment_id: u64,
        deployment_id: &str,
    ) -> Result<(), RepoError> {
        self.store
            .write(pointer(
                format!("GHDEP#{github_deployment_id}"),
                "MAP",
                deployment_id.to_string(),
            ))
            .await?;
        Ok(())
    }

    /// Deployments of one environment created in `[from, to)`, newest first when `descending`.
    pub async fn deployments_in(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
        descending: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Deployment>, RepoError> {
        let items = self
            .store
            .query(Query::Timeline {
                pk: format!("ENV#{environment}#DEPLOYS"),
                from: ms_key(from),
                to: ms_key(to),
                descending,
                limit,
            })
            .await?;
        items
            .iter()
            .map(|i| {
                let mut d: Deployment = from_item(i, "deployment")?;
                d.version = i.version;
                Ok(d)
            })
            .collect()
    }

    /// Id of the deployment holding the scope's lock, if any.
    pub async fn lock_holder(&self, scope: &Scope) -> Result<Option<String>, RepoError> {
        match self.store.get(&scope_pk(scope), "LOCK").await? {
            Some(item) => Ok(Some(from_item::<LockRecord>(&item, "lock")?.holder)),
            None => Ok(None),
        }
    }

    /// Releases a lock whose holder no longer holds it by state (sweeper, after a crash
    /// between a decision and its save). Returns true when a lock was released.
    pub async fn release_stale_lock(&self, scope: &Scope) -> Result<bool, RepoError> {
        let Some(lock) = self.store.get(&scope_pk(scope), "LOCK").await? else {
            return Ok(false);
        };
        let rec: LockRecord = from_item(&lock, "lock")?;
        let holder_active = match self.get_deployment(&rec.holder).await? {
            Some(d) => d.state.holds_lock(),
            None => false,
        };
        if holder_active {
            return Ok(false);
        }
        match self
            .store
            .write(Write::Delete {
                pk: lock.pk,
                sk: lock.sk,
                condition: Condition::Version(lock.version),
            })
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The heads of a scope: what its repository runs in the environment now, and what to
    /// roll back to.
    pub async fn heads(&self, scope: &Scope) -> Result<EnvironmentHeads, RepoError> {
        match self.store.get(&scope_pk(scope), "HEADS").await? {
            Some(item) => {
                let mut h: EnvironmentHeads = from_item(&item, "heads")?;
                h.version = item.version;
                Ok(h)
            }
            None => Ok(EnvironmentHeads {
                environment: scope.environment.to_string(),
                repo: Some(scope.repo.clone()),
                ..Default::default()
            }),
        }
    }

    /// Moves a scope's heads: `current` always, `last_known_good` when `good`.
    /// Retries on concurrent updates, since heads are last-writer-wins per field.
    pub async fn set_head(
        &self,
        scope: &Scope,
        head: Head,
        good: bool,
    ) -> Result<EnvironmentHeads, RepoError> {
        for _ in 0..5 {
            let mut heads = self.heads(scope).await?;
            heads.repo = Some(scope.repo.clone());
            let condition = if heads.version == 0 {
                Condition::Absent { now: i64::MIN }
            } else {
                Condition::Version(heads.version)
            };
            heads.current = Some(head.clone());
            if good {
                heads.last_known_good = Some(head.clone());
            }
            heads.version += 1;
            let item = Item {
                pk: scope_pk(scope),
                sk: "HEADS".into(),
                version: heads.version,
                expires_at: None,
                timeline: None,
                data: to_json(&heads),
            };
            match self.store.write(Write::Put { item, condition }).await {
                Ok(()) => return Ok(heads),
                Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Stale {
            what: format!("heads of {scope}"),
        })
    }

    /// Records a fact about a sha (`kind` is `OK#{env}`, `CI#{workflow}` or `COMMIT`).
    pub async fn record_sha_fact(&self, kind: &str, fact: &ShaFact) -> Result<(), RepoError> {
        self.store
            .write(Write::Put {
                item: Item {
                    pk: format!("SHA#{}@{}", fact.repo, fact.sha),
                    sk: kind.to_string(),
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(fact),
                },
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// Facts recorded for a sha whose kind starts with `prefix`.
    pub async fn sha_facts(
        &self,
        repo: &str,
        sha: &str,
        prefix: &str,
    ) -> Result<Vec<(String, ShaFact)>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: format!("SHA#{repo}@{sha}"),
                sk_prefix: prefix.to_string(),
                descending: false,
                limit: None,
            })
            .await?;
        items
            .iter()
            .map(|i| Ok((i.sk.clone(), from_item(i, "sha fact")?)))
            .collect()
    }

    /// Keeps a push in its head's partition (a redelivery writes the same item again).
    pub async fn record_push(&self, push: &PushRecord) -> Result<(), RepoError> {
        let before = push.before.as_ref().map_or("new", |s| s.as_str());
        self.store
            .write(Write::Put {
                item: Item {
                    pk: format!("SHA#{}@{}", push.repo, push.after),
                    sk: format!("PUSH#{before}"),
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(push),
                },
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// Everything known of a sha (commit time, environments it succeeded in, pushes to it),
    /// from one read of its partition.
    pub async fn sha_record(&self, repo: &str, sha: &str) -> Result<ShaRecord, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: format!("SHA#{repo}@{sha}"),
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await?;
        let mut record = ShaRecord::default();
        for item in &items {
            if item.sk == "COMMIT" {
                let fact: ShaFact = from_item(item, "sha fact")?;
                record.committed_at = Some(record.committed_at.map_or(fact.at, |t| t.min(fact.at)));
            } else if let Some(env) = item.sk.strip_prefix("OK#") {
                record.succeeded_in.insert(env.to_string());
            } else if item.sk.starts_with("PUSH#") {
                record.pushes.push(from_item(item, "push")?);
            }
        }
        Ok(record)
    }

    /// Environments where this sha's deployment succeeded.
    pub async fn succeeded_in(&self, repo: &str, sha: &str) -> Result<BTreeSet<String>, RepoError> {
        Ok(self
            .sha_facts(repo, sha, "OK#")
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix("OK#").map(str::to_string))
            .collect())
    }

    /// The audit log of one deployment, oldest first.
    pub async fn audit_for_deployment(
        &self,
        deployment_id: &str,
    ) -> Result<Vec<AuditEvent>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: format!("AUDIT#{deployment_id}"),
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await?;
        items.iter().map(|i| from_item(i, "audit event")).collect()
    }

    /// The audit log of one environment in `[from, to)`.
    pub async fn audit_for_environment(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
        limit: Option<usize>,
    ) -> Result<Vec<AuditEvent>, RepoError> {
        let items = self
            .store
            .query(Query::Timeline {
                pk: format!("ENV#{environment}#AUDIT"),
                from: ms_key(from),
                to: ms_key(to),
                descending: false,
                limit,
            })
            .await?;
        items.iter().map(|i| from_item(i, "audit event")).collect()
    }

    /// Writes audit events that go with no record change.
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), RepoError> {
        if events.is_empty() {
            return Ok(());
        }
        self.store.transact(audit_writes(events)).await?;
        Ok(())
    }

    /// Records one analysis sample with its audit line (`analysis_sample`, shown by
    /// `history`), both or neither. `Ok(false)`: the slot was sampled already (by another
    /// sweep), and nothing was written.
    pub async fn record_sample(
        &self,
        sample: &crate::domain::analysis::Sample,
        environment: &str,
    ) -> Result<bool, RepoError> {
        let pk = format!("ANALYSIS#{}", sample.deployment_id);
        let sk = format!("{}#{:05}", sample.check, sample.slot);
        let mut writes = vec![Write::Put {
            item: Item {
                pk: pk.clone(),
                sk: sk.clone(),
                version: 1,
                expires_at: None,
                timeline: None,
                data: to_json(sample),
            },
            condition: Condition::Absent { now: i64::MIN },
        }];
        writes.extend(audit_writes(&[AuditEvent {
            at: sample.at,
            deployment_id: sample.deployment_id.clone(),
            environment: environment.to_owned(),
            actor: "analysis".to_owned(),
            what: "analysis_sample".to_owned(),
            from: None,
            to: None,
            why: sample.line(),
        }]));
        match self.store.transact(writes).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            // A conflict does not say which condition failed: the sample tells.
            Err(StoreError::Conflict) if self.store.get(&pk, &sk).await?.is_some() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A deployment's analysis samples, by check and slot.
    pub async fn samples(
        &self,
        deployment_id: &str,
    ) -> Result<Vec<crate::domain::analysis::Sample>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: format!("ANALYSIS#{deployment_id}"),
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await?;
        items
            .iter()
            .map(|i| from_item(i, "analysis sample"))
            .collect()
    }

    /// Keeps the day's DORA reports of one environment (every scope and window), replacing an
    /// earlier run's of the same UTC day: the figures' history, read by `shipgate dora`.
    pub async fn put_dora_day(
        &self,
        environment: &str,
        day: jiff::civil::Date,
        reports: &[crate::domain::dora::DoraReport],
    ) -> Result<(), RepoError> {
        self.store
            .write(Write::Put {
                item: Item {
                    pk: format!("DORA#{environment}"),
                    sk: day.to_string(),
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(&DoraDay {
                        day,
                        reports: reports.to_vec(),
                    }),
                },
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// Keeps one calendar week's DORA reports of an environment (every scope, the week as
    /// the window; `week` is its Sunday), replacing an earlier run's.
    pub async fn put_dora_week(
        &self,
        environment: &str,
        week: jiff::civil::Date,
        reports: &[crate::domain::dora::DoraReport],
    ) -> Result<(), RepoError> {
        self.store
            .write(Write::Put {
                item: Item {
                    pk: format!("DORAWEEK#{environment}"),
                    sk: week.to_string(),
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(&DoraDay {
                        day: week,
                        reports: reports.to_vec(),
                    }),
                },
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// The kept DORA weeks of one environment whose Sunday is `from` or later, oldest first.
    pub async fn dora_weeks(
        &self,
        environment: &str,
        from: jiff::civil::Date,
    ) -> Result<Vec<DoraDay>, RepoError> {
        self.dora_series(format!("DORAWEEK#{environment}"), from)
            .await
    }

    /// The kept DORA days of one environment from `from` on, oldest first.
    pub async fn dora_days(
        &self,
        environment: &str,
        from: jiff::civil::Date,
    ) -> Result<Vec<DoraDay>, RepoError> {
        self.dora_series(format!("DORA#{environment}"), from).await
    }

    async fn dora_series(
        &self,
        pk: String,
        from: jiff::civil::Date,
    ) -> Result<Vec<DoraDay>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk,
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await?;
        let mut days = Vec::new();
        for item in &items {
            let day: DoraDay = from_item(item, "DORA day")?;
            if day.day >= from {
                days.push(day);
            }
        }
        Ok(days)
    }

    /// Stores a small named document (hook registrations, job results, drill reports).
    pub async fn put_meta<T: Serialize>(
        &self,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<(), RepoError> {
        self.store
            .write(Write::Put {
                item: Item {
                    pk: format!("META#{kind}"),
                    sk: name.to_string(),
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(value),
                },
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    pub async fn get_meta<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, RepoError> {
        match self.store.get(&format!("META#{kind}"), name).await? {
            Some(item) => Ok(Some(from_item(&item, kind)?)),
            None => Ok(None),
        }
    }

    /// Deployments of an environment still in a lock-holding state (the sweeper's work list).
    pub async fn active_deployments(
        &self,
        environment: &str,
        now: Timestamp,
        horizon_days: i64,
    ) -> Result<Vec<Deployment>, RepoError> {
        let from = now
            .checked_sub(jiff::SignedDuration::from_hours(24 * horizon_days))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let all = self
            .deployments_in(environment, from, Timestamp::MAX, false, None)
            .await?;
        Ok(all.into_iter().filter(|d| d.state.is_open()).collect())
    }

    /// Reads an incident by id.
    pub async fn get_incident(&self, id: &str) -> Result<Option<Incident>, RepoError> {
        match self.store.get(&format!("INC#{id}"), "INC").await? {
            Some(item) => {
                let mut inc: Incident = from_item(&item, "incident")?;
                inc.version = item.version;
                Ok(Some(inc))
            }
            None => Ok(None),
        }
    }

    /// Every entry of timeline `pk` in `[from, to)`, oldest first.
    async fn timeline(
        &self,
        pk: String,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Item>, RepoError> {
        Ok(self
            .store
            .query(Query::Timeline {
                pk,
                from: ms_key(from),
                to: ms_key(to),
                descending: false,
                limit: None,
            })
            .await?)
    }

    /// Incidents of an environment opened in `[from, to)` (`_unknown` for unmapped alerts).
    pub async fn incidents_in(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Incident>, RepoError> {
        let items = self
            .timeline(format!("ENV#{environment}#INCIDENTS"), from, to)
            .await?;
        items
            .iter()
            .map(|i| {
                let mut inc: Incident = from_item(i, "incident")?;
                inc.version = i.version;
                Ok(inc)
            })
            .collect()
    }

    /// Creates (version 0) or updates (version check) an incident together with its entry in
    /// the open-incident index of its scope (`SCOPE#{repo}#{env}` / `OPEN#{id}`) or, when no
    /// repository is named, of its environment (`ENV#{env}` / `OPEN#{id}`), in one transaction:
    /// the entry exists exactly while the incident is open, so the gate and the status page
    /// read a handful of items instead of the environment's whole incident history.
    ///
    /// `moved_from` is the index partition the incident's entry was in before this change,
    /// when the change moved it (an incident reopened in another scope): the old entry is
    /// deleted in the same transaction.
    pub async fn save_incident_indexed(
        &self,
        incident: &mut Incident,
        moved_from: Option<&str>,
    ) -> Result<(), RepoError> {
        self.save_incident_logged(incident, moved_from, None).await
    }

    /// [`Repo::save_incident_indexed`], and `event` appended to the incident log in the same
    /// transaction (`INC#{id}` / `LOG#{version}`, on the `ENV#{env}#INCIDENT_LOG` timeline),
    /// so the log holds each applied change exactly once.
    pub async fn save_incident_logged(
        &self,
        incident: &mut Incident,
        moved_from: Option<&str>,
        event: Option<&IncidentEvent>,
    ) -> Result<(), RepoError> {
        use crate::domain::incident::{IncidentStatus, OpenIncident};
        let expected = incident.version;
        let condition = if expected == 0 {
            Condition::Absent { now: i64::MIN }
        } else {
            Condition::Version(expected)
        };
        incident.version = expected + 1;
        let env = incident
            .environment
            .clone()
            .unwrap_or_else(|| UNKNOWN_ENVIRONMENT.to_string());
        let item = Item {
            pk: format!("INC#{}", incident.id),
            sk: "INC".into(),
            version: incident.version,
            expires_at: None,
            timeline: Some(Timeline {
                pk: format!("ENV#{env}#INCIDENTS"),
                sk: format!("{}#{}", ms_key(incident.opened_at), incident.id),
            }),
            data: to_json(incident),
        };
        let index_sk = format!("OPEN#{}", incident.id);
        let index_pk = open_index_pk(incident);
        let stale_index = moved_from
            .filter(|pk| *pk != index_pk)
            .map(|pk| Write::Delete {
                pk: pk.to_string(),
                sk: index_sk.clone(),
                condition: Condition::None,
            });
        let index = if incident.status == IncidentStatus::Open {
            Write::Put {
                item: Item {
                    pk: index_pk,
                    sk: index_sk,
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(&OpenIncident::of(incident)),
                },
                condition: Condition::None,
            }
        } else {
            Write::Delete {
                pk: index_pk,
                sk: index_sk,
                condition: Condition::None,
            }
        };
        let log = event.map(|event| Write::Put {
            item: Item {
                pk: format!("INC#{}", incident.id),
                sk: format!("LOG#{:020}", incident.version),
                version: 1,
                expires_at: None,
                timeline: Some(Timeline {
                    pk: format!("ENV#{env}#INCIDENT_LOG"),
                    sk: format!(
                        "{}#{}#{:020}",
                        ms_key(event.at),
                        incident.id,
                        incident.version
                    ),
                }),
                data: to_json(event),
            },
            condition: Condition::Absent { now: i64::MIN },
        });
        let mut writes = vec![Write::Put { item, condition }, index];
        writes.extend(stale_index);
        writes.extend(log);
        match self.store.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => {
                incident.version = expected;
                Err(RepoError::Stale {
                    what: format!("incident {}", incident.id),
                })
            }
            Err(e) => {
                incident.version = expected;
                Err(e.into())
            }
        }
    }

    /// The incident log of an environment (`_unknown` for unmapped alerts) in `[from, to)`,
    /// oldest first (see [`Repo::save_incident_logged`]).
    pub async fn incident_log(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<IncidentEvent>, RepoError> {
        let items = self
            .timeline(format!("ENV#{environment}#INCIDENT_LOG"), from, to)
            .await?;
        items
            .iter()
            .map(|i| from_item(i, "incident log entry"))
            .collect()
    }

    /// The open environment-level incidents of an environment (`_unknown` for unmapped
    /// alerts), from the index [`Repo::save_incident_indexed`] keeps. A repository's own
    /// incidents are in [`Repo::scope_state`].
    pub async fn open_incidents(
        &self,
        environment: &str,
    ) -> Result<Vec<crate::domain::incident::OpenIncident>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: env_pk(environment),
                sk_prefix: "OPEN#".into(),
                descending: false,
                limit: None,
            })
            .await?;
        items
            .iter()
            .map(|i| from_item(i, "open incident"))
            .collect()
    }

    /// Ids of the open critical incidents blocking a scope: its repository's own and its
    /// environment's environment-level ones, read from the open-incident indexes.
    pub async fn open_critical_incident_ids(
        &self,
        scope: &Scope,
    ) -> Result<Vec<String>, RepoError> {
        let own = self.scope_state(scope).await?.open_incidents;
        let shared = self.open_incidents(scope.environment.as_str()).await?;
        Ok(critical_ids(own.into_iter().chain(shared)))
    }

    /// The lock holder, the scope's own open incidents and its current head, in one read of
    /// the scope's partition (the gate's facts).
    pub async fn scope_state(&self, scope: &Scope) -> Result<ScopeState, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: scope_pk(scope),
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await?;
        let mut state = ScopeState::default();
        for item in &items {
            if item.sk == "LOCK" {
                state.lock_holder = Some(from_item::<LockRecord>(item, "lock")?.holder);
            } else if item.sk.starts_with("OPEN#") {
                state.open_incidents.push(from_item(item, "open incident")?);
            } else if item.sk == "HEADS" {
                let heads = from_item::<EnvironmentHeads>(item, "heads")?;
                state.current = heads.current;
                state.last_known_good = heads.last_known_good;
            } else if item.sk.starts_with("QUEUE#") {
                state.queue.push(from_item(item, "queue entry")?);
            }
        }
        sort_queue(&mut state.queue);
        Ok(state)
    }

    /// Lists a scope's repository among its environment's (what [`Repo::create_deployment`]
    /// does for each new deployment; the migration does it for older ones).
    pub async fn index_repository(&self, scope: &Scope) -> Result<(), RepoError> {
        self.store
            .write(Write::Put {
                item: Item {
                    pk: env_pk(scope.environment.as_str()),
                    sk: format!("SCOPE#{}", scope.repo),
                    version: 1,
                    expires_at: None,
                    timeline: None,
                    data: to_json(&ScopeEntry {
                        repo: scope.repo.clone(),
                    }),
                },
                condition: Condition::None,
            })
            .await?;
        Ok(())
    }

    /// The repositories that ever deployed to an environment, from the index
    /// [`Repo::create_deployment`] keeps.
    pub async fn repositories_in(&self, environment: &str) -> Result<Vec<RepoName>, RepoError> {
        let items = self
            .store
            .query(Query::Partition {
                pk: env_pk(environment),
                sk_prefix: "SCOPE#".into(),
                descending: false,
                limit: None,
            })
            .await?;
        items
            .iter()
            .map(|i| Ok(from_item::<ScopeEntry>(i, "scope entry")?.repo))
            .collect()
    }

    /// Takes the scope's lock for `deployment_id` unless another deployment holds it.
    /// Returns the holder that kept it, or `None` when the lock is now `deployment_id`'s
    /// (taken here, or already its own). Used when a finished deployment starts rolling back
    /// and so needs the lock again.
    pub async fn try_take_lock(
        &self,
        scope: &Scope,
        deployment_id: &str,
        now: Timestamp,
    ) -> Result<Option<String>, RepoError> {
        for _ in 0..3 {
            let put = lock_put(scope, deployment_id, now);
            match self.store.write(put).await {
                Ok(()) => return Ok(None),
                Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => {
                    match self.lock_holder(scope).await? {
                        Some(holder) if holder != deployment_id => return Ok(Some(holder)),
                        Some(_) => return Ok(None),
                        // Released between our write and our read: try again.
                        None => continue,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Stale {
            what: format!("lock of {scope}"),
        })
    }
}

/// The ids of the critical incidents among `open`.
pub fn critical_ids(
    open: impl IntoIterator<Item = crate::domain::incident::OpenIncident>,
) -> Vec<String> {
    open.into_iter()
        .filter(|i| i.severity == crate::domain::policy::Severity::Critical)
        .map(|i| i.id)
        .collect()
}

#[cfg(test)]
mod claim_tests {
    //! The claim lifecycle against the SQLite adapter, with a wrapper that loses the answer
    //! of chosen writes (the write lands, the caller sees a backend error).

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::embedded::sqlite::SqliteStore;

    /// Passes every call through; the writes counted in `lose` land and then report failure,
    /// those in `refuse` fail without landing.
    struct Lossy {
        inner: SqliteStore,
        lose: AtomicUsize,
        refuse: AtomicUsize,
        /// Transactions cancelled as conflicting (DynamoDB's TransactionConflict) unapplied.
        conflict: AtomicUsize,
    }

    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn lost() -> StoreError {
        StoreError::Backend {
            message: "answer lost".into(),
            source: None,
        }
    }

    #[async_trait]
    impl ItemStore for Lossy {
        async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
            self.inner.get(pk, sk).await
        }
        async fn write(&self, write: Write) -> Result<(), StoreError> {
            if take(&self.refuse) {
                return Err(lost());
            }
            self.inner.write(write).await?;
            if take(&self.lose) {
                return Err(lost());
            }
            Ok(())
        }
        async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
            if take(&self.conflict) {
                return Err(StoreError::Conflict);
            }
            self.inner.transact(writes).await
        }
        async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
            self.inner.query(query).await
        }
        async fn scan(
            &self,
            segment: u32,
            total_segments: u32,
            cursor: Option<String>,
        ) -> Result<(Vec<Item>, Option<String>), StoreError> {
            self.inner.scan(segment, total_segments, cursor).await
        }
    }

    fn repo() -> (Repo, Arc<Lossy>) {
        let store = Arc::new(Lossy {
            inner: SqliteStore::in_memory().expect("sqlite"),
            lose: AtomicUsize::new(0),
            refuse: AtomicUsize::new(0),
            conflict: AtomicUsize::new(0),
        });
        (Repo::new(store.clone()), store)
    }

    fn t0() -> Timestamp {
        "2025-06-02T10:00:00Z".parse().expect("timestamp")
    }

    const LEASE: Duration = Duration::from_secs(120);
    const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

    #[tokio::test]
    async fn a_pending_claim_keeps_others_out_until_confirmed_then_counts_as_done() {
        let (repo, _) = repo();
        let now = t0();
        assert_eq!(
            repo.begin_event("github", "d-1", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            repo.begin_event("github", "d-1", now, LEASE).await.unwrap(),
            Claim::InProgress
        );
        repo.confirm_event("github", "d-1", now, TTL).await.unwrap();
        // Long past the lease, well inside the TTL.
        let later = now + jiff::SignedDuration::from_hours(24);
        assert_eq!(
            repo.begin_event("github", "d-1", later, LEASE)
                .await
                .unwrap(),
            Claim::Done
        );
    }

    #[tokio::test]
    async fn an_unconfirmed_claim_is_taken_over_once_its_lease_ran_out() {
        let (repo, _) = repo();
        let now = t0();
        assert_eq!(
            repo.begin_event("alert", "a-1", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
        let just_before = now + jiff::SignedDuration::from_secs(119);
        assert_eq!(
            repo.begin_event("alert", "a-1", just_before, LEASE)
                .await
                .unwrap(),
            Claim::InProgress
        );
        let after = now + jiff::SignedDuration::from_secs(120);
        assert_eq!(
            repo.begin_event("alert", "a-1", after, LEASE)
                .await
                .unwrap(),
            Claim::Acquired
        );
    }

    fn gated(id: &str, run_id: u64) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "repo": "acme/api",
            "environment": "staging",
            "git_ref": "main",
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "requester": "octocat",
            "kind": "deploy",
            "state": "approved",
            "version": 0,
            "created_at": t0(),
            "updated_at": t0(),
            "run_id": run_id,
            "installation_id": 7,
        }))
        .expect("deployment")
    }

    #[tokio::test]
    async fn a_request_whose_create_conflicts_with_the_runs_other_request_finds_the_run_taken() {
        let (repo, store) = repo();
        let mut first = gated("dep-first", 77);
        assert_eq!(
            repo.create_gated(&mut first, &[], t0(), None)
                .await
                .unwrap(),
            Created::Created
        );
        // DynamoDB cancels the second request's transaction as a conflict while the first is
        // committing, without naming the run's pointer.
        store.conflict.store(1, Ordering::SeqCst);
        let mut second = gated("dep-second", 77);
        assert_eq!(
            repo.create_gated(&mut second, &[], t0(), None)
                .await
                .unwrap(),
            Created::RunTaken
        );
        // A conflict on another run's request is still a lost lock, not a taken run.
        store.conflict.store(1, Ordering::SeqCst);
        let mut other = gated("dep-other", 78);
        assert_eq!(
            repo.create_gated(&mut other, &[], t0(), None)
                .await
                .unwrap(),
            Created::Locked {
                holder: "dep-first".into()
            }
        );
    }

    #[tokio::test]
    async fn a_released_claim_is_claimed_afresh() {
        let (repo, _) = repo();
        let now = t0();
        assert_eq!(
            repo.begin_event("job", "tick", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
        repo.release_event("job", "tick").await.unwrap();
        assert_eq!(
            repo.begin_event("job", "tick", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
    }

    #[tokio::test]
    async fn a_claim_whose_answer_was_lost_is_recognised_as_ours_by_its_token() {
        let (repo, store) = repo();
        let now = t0();
        store.lose.store(1, Ordering::SeqCst);
        assert_eq!(
            repo.begin_event("github", "d-2", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
        // The claim is really there, pending, for everyone else.
        assert_eq!(
            repo.begin_event("github", "d-2", now, LEASE).await.unwrap(),
            Claim::InProgress
        );
    }

    #[tokio::test]
    async fn a_claim_write_that_did_not_land_is_tried_once_more() {
        let (repo, store) = repo();
        let now = t0();
        store.refuse.store(1, Ordering::SeqCst);
        assert_eq!(
            repo.begin_event("github", "d-3", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
        store.refuse.store(2, Ordering::SeqCst);
        let failed = repo.begin_event("github", "d-4", now, LEASE).await;
        assert!(
            matches!(failed, Err(RepoError::Store(StoreError::Backend { .. }))),
            "{failed:?}"
        );
        assert_eq!(
            repo.begin_event("github", "d-4", now, LEASE).await.unwrap(),
            Claim::Acquired,
            "the refused writes left nothing behind"
        );
    }

    #[tokio::test]
    async fn a_lost_answer_with_someone_elses_claim_there_is_not_ours() {
        let (repo, store) = repo();
        let now = t0();
        repo.confirm_event("github", "d-5", now, TTL).await.unwrap();
        // The put is refused by its condition; a backend error instead must not make it ours.
        store.refuse.store(1, Ordering::SeqCst);
        assert_eq!(
            repo.begin_event("github", "d-5", now, LEASE).await.unwrap(),
            Claim::Done
        );
    }

    #[tokio::test]
    async fn a_release_that_fails_once_is_tried_again() {
        let (repo, store) = repo();
        let now = t0();
        assert_eq!(
            repo.begin_event("github", "d-6", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
        store.refuse.store(1, Ordering::SeqCst);
        repo.release_event("github", "d-6").await.unwrap();
        assert_eq!(
            repo.begin_event("github", "d-6", now, LEASE).await.unwrap(),
            Claim::Acquired
        );
    }

    #[tokio::test]
    async fn a_guard_claim_holds_for_its_ttl_and_survives_a_lost_answer() {
        let (repo, store) = repo();
        let now = t0();
        store.lose.store(1, Ordering::SeqCst);
        assert!(repo
            .claim_event("notify-post", "dep-1", now, LEASE)
            .await
            .unwrap());
        assert!(!repo
            .claim_event("notify-post", "dep-1", now, LEASE)
            .await
            .unwrap());
        let after = now + jiff::SignedDuration::from_secs(120);
        assert!(repo
            .claim_event("notify-post", "dep-1", after, LEASE)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_claim_stored_before_leases_existed_reads_as_done() {
        let (repo, store) = repo();
        let now = t0();
        store
            .write(Write::Put {
                item: Item {
                    pk: "IDEM#github#old".into(),
                    sk: "IDEM".into(),
                    version: 1,
                    expires_at: Some(now.as_second() + 3600),
                    timeline: None,
                    data: format!(r#"{{"at":"{now}"}}"#),
                },
                condition: Condition::None,
            })
            .await
            .unwrap();
        assert_eq!(
            repo.begin_event("github", "old", now, LEASE).await.unwrap(),
            Claim::Done
        );
    }
}
