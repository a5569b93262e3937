//! Store schema versions and the migration between them.
//!
//! The schema version lives in `META#schema` / `version` (`{"version": N}`); a store without
//! it is version 0. Version 1 keys environment-level state per scope (a repository in an
//! environment, see [`crate::domain::Scope`]). [`migrate`] moves version-0 records:
//!
//! | v0 record | v1 record | repository taken from |
//! |---|---|---|
//! | `ENV#{env}` / `LOCK` | `SCOPE#{repo}#{env}` / `LOCK` | the holder deployment |
//! | `ENV#{env}` / `HEADS` | `SCOPE#{repo}#{env}` / `HEADS` | the current (else last known good) deployment |
//! | `ENV#{env}` / `OPEN#{id}` | `SCOPE#{repo}#{env}` / `OPEN#{id}`, and the incident's `repository` | the incident's `caused_by_deployment` (an incident blamed on no deployment stays at environment level) |
//! | `META#rollback-drill` / `{env}` | `META#rollback-drill` / `{repo}#{env}` | the drill's own `repo` |
//! | (none) | `ENV#{env}` / `SCOPE#{repo}` | every deployment |
//!
//! Each step is conditional and safe to repeat: a record is written at its new key only if
//! nothing is there yet, and the old record is deleted only at the version that was read, so
//! running the migration twice, or again after a crash halfway, ends in the same state. The
//! version record is written last. `shipgate serve` runs it at start and `shipgate migrate`
//! on demand. On AWS the scheduled-jobs function runs it as the `migrate` job: invoked once
//! right after a deploy that changes the schema, and by the sweeper (one read of the version
//! per sweep) whenever it finds the table behind.

use serde::{Deserialize, Serialize};

use super::item::{Condition, Item, StoreError, Write};
use super::repo::{Repo, RepoError};
use crate::domain::deployment::{Deployment, EnvironmentHeads};
use crate::domain::incident::Incident;
use crate::domain::scope::Scope;

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_PK: &str = "META#schema";
const SCHEMA_SK: &str = "version";
const DRILL_PK: &str = "META#rollback-drill";

/// The stored schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub version: u32,
}

/// Why the migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored {what} is not valid: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store has schema version {found}; this shipgate knows up to {SCHEMA_VERSION}")]
    TooNew { found: u32 },
}

/// What one run of the migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// The version found before the run.
    pub from_version: u32,
    pub to_version: u32,
    /// Records moved to their scoped keys.
    pub moved: usize,
    /// Old records dropped because their holder or deployment is gone or no longer active.
    pub dropped: usize,
    /// Repository index entries written.
    pub indexed: usize,
    /// Old records left as they were (their repository could not be told).
    pub kept: Vec<String>,
}

/// One line saying what a run did: `schema version 0 -> 1: 3 records moved, ...`.
pub fn summary(report: &MigrationReport) -> String {
    if report.from_version == report.to_version {
        return format!("schema version {}: nothing to do", report.to_version);
    }
    let kept = if report.kept.is_empty() {
        String::new()
    } else {
        format!("; left as they were: {}", report.kept.join(", "))
    };
    format!(
        "schema version {} -> {}: {} records moved, {} dropped, {} repository index entries{kept}",
        report.from_version, report.to_version, report.moved, report.dropped, report.indexed
    )
}

fn corrupt(what: &str, source: serde_json::Error) -> MigrateError {
    MigrateError::Corrupt {
        what: what.to_string(),
        source,
    }
}

fn parse<T: serde::de::DeserializeOwned>(item: &Item, what: &str) -> Result<T, MigrateError> {
    serde_json::from_str(&item.data).map_err(|e| corrupt(what, e))
}

/// The stored schema version (0 when none is recorded).
pub async fn schema_version(repo: &Repo) -> Result<u32, MigrateError> {
    match repo.store().get(SCHEMA_PK, SCHEMA_SK).await? {
        Some(item) => Ok(parse::<SchemaVersion>(&item, "schema version")?.version),
        None => Ok(0),
    }
}

/// Every item of the store, page by page.
async fn all_items(repo: &Repo) -> Result<Vec<Item>, MigrateError> {
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = repo.store().scan(0, 1, cursor).await?;
        items.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(items),
        }
    }
}

/// `ENV#{env}` with nothing after the environment (not a timeline partition).
fn env_of(pk: &str) -> Option<&str> {
    let env = pk.strip_prefix("ENV#")?;
    (!env.contains('#')).then_some(env)
}

/// Moves `old` to `new_pk` / same sk with `data`, unless something is at the new key already;
/// deletes `old` at the version read either way. Returns true when this call moved it.
async fn move_item(
    repo: &Repo,
    old: &Item,
    new_pk: String,
    data: String,
) -> Result<bool, MigrateError> {
    let delete = Write::Delete {
        pk: old.pk.clone(),
        sk: old.sk.clone(),
        condition: Condition::Version(old.version),
    };
    let put = Write::Put {
        item: Item {
            pk: new_pk,
            sk: old.sk.clone(),
            version: old.version,
            expires_at: old.expires_at,
            timeline: old.timeline.clone(),
            data,
        },
        condition: Condition::Absent { now: i64::MIN },
    };
    match repo.store().transact(vec![put, delete]).await {
        Ok(()) => Ok(true),
        Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => {
            // The new key is taken (moved before, or written since by the new code), or the
            // old record changed since it was read: drop the old one if it is still as read.
            drop_item(repo, old).await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn drop_item(repo: &Repo, old: &Item) -> Result<(), MigrateError> {
    match repo
        .store()
        .write(Write::Delete {
            pk: old.pk.clone(),
            sk: old.sk.clone(),
            condition: Condition::Version(old.version),
        })
        .await
    {
        Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn deployment(repo: &Repo, id: &str) -> Result<Option<Deployment>, MigrateError> {
    Ok(repo.get_deployment(id).await?)
}

#[derive(Deserialize)]
struct LockRecord {
    holder: String,
}

/// Migrates the store to [`SCHEMA_VERSION`]; a no-op on a current store.
pub async fn migrate(repo: &Repo) -> Result<MigrationReport, MigrateError> {
    let from = schema_version(repo).await?;
    let mut report = MigrationReport {
        from_version: from,
        to_version: SCHEMA_VERSION,
        ..Default::default()
    };
    if from > SCHEMA_VERSION {
        return Err(MigrateError::TooNew { found: from });
    }
    if from == SCHEMA_VERSION {
        return Ok(report);
    }
    let items = all_items(repo).await?;

    // The index of each environment's repositories, from every deployment.
    let mut scopes = std::collections::BTreeSet::new();
    for item in items
        .iter()
        .filter(|i| i.pk.starts_with("DEP#") && i.sk == "DEP")
    {
        let dep: Deployment = parse(item, "deployment")?;
        scopes.insert(dep.scope());
    }
    for scope in &scopes {
        repo.index_repository(scope).await?;
        report.indexed += 1;
    }

    for item in &items {
        if let Some(env) = env_of(&item.pk) {
            let env = env.to_string();
            if item.sk == "LOCK" {
                let lock: LockRecord = parse(item, "lock")?;
                match deployment(repo, &lock.holder).await? {
                    Some(dep) if dep.state.holds_lock() => {
                        if move_item(repo, item, dep.scope().key(), item.data.clone()).await? {
                            report.moved += 1;
                        }
                    }
                    _ => {
                        drop_item(repo, item).await?;
                        report.dropped += 1;
                    }
                }
            } else if item.sk == "HEADS" {
                let mut heads: EnvironmentHeads = parse(item, "heads")?;
                let named = heads
                    .current
                    .as_ref()
                    .or(heads.last_known_good.as_ref())
                    .map(|h| h.deployment_id.clone());
                let dep = match named {
                    Some(id) => deployment(repo, &id).await?,
                    None => None,
                };
                match dep {
                    Some(dep) => {
                        heads.repo = Some(dep.repo.clone());
                        let data =
                            serde_json::to_string(&heads).map_err(|e| corrupt("heads", e))?;
                        if move_item(repo, item, dep.scope().key(), data).await? {
                            report.moved += 1;
                        }
                    }
                    None => report.kept.push(format!("{} / {}", item.pk, item.sk)),
                }
            } else if let Some(id) = item.sk.strip_prefix("OPEN#") {
                if move_open_incident(repo, item, id).await? {
                    report.moved += 1;
                } else {
                    report
                        .kept
                        .push(format!("{} / {} ({env})", item.pk, item.sk));
                }
            }
        } else if item.pk == DRILL_PK && !item.sk.contains('#') {
            let drill: serde_json::Value = parse(item, "rollback drill")?;
            match drill.get("repo").and_then(|r| r.as_str()) {
                Some(drill_repo) => {
                    let new_sk = format!("{drill_repo}#{}", item.sk);
                    let moved = Item {
                        sk: new_sk,
                        ..item.clone()
                    };
                    if move_drill(repo, item, moved).await? {
                        report.moved += 1;
                    }
                }
                None => report.kept.push(format!("{} / {}", item.pk, item.sk)),
            }
        }
    }

    repo.store()
        .write(Write::Put {
            item: Item {
                pk: SCHEMA_PK.into(),
                sk: SCHEMA_SK.into(),
                version: 1,
                expires_at: None,
                timeline: None,
                data: serde_json::to_string(&SchemaVersion {
                    version: SCHEMA_VERSION,
                })
                .map_err(|e| corrupt("schema version", e))?,
            },
            condition: Condition::None,
        })
        .await?;
    tracing::info!(
        from = from,
        to = SCHEMA_VERSION,
        moved = report.moved,
        dropped = report.dropped,
        "store migrated"
    );
    Ok(report)
}

/// Moves an open incident's index entry to its deployment's scope and records the
/// repository on the incident, in one transaction. False when the incident names no
/// recorded deployment (it stays an environment-level incident).
async fn move_open_incident(repo: &Repo, entry: &Item, id: &str) -> Result<bool, MigrateError> {
    let Some(item) = repo.store().get(&format!("INC#{id}"), "INC").await? else {
        drop_item(repo, entry).await?;
        return Ok(false);
    };
    let mut incident: Incident = parse(&item, "incident")?;
    let Some(dep_id) = incident.caused_by_deployment.clone() else {
        return Ok(false);
    };
    let Some(dep) = deployment(repo, &dep_id).await? else {
        return Ok(false);
    };
    let scope: Scope = dep.scope();
    incident.repository = Some(dep.repo.clone());
    let mut entry_data: serde_json::Value = parse(entry, "open incident")?;
    entry_data["repository"] = serde_json::Value::String(dep.repo.to_string());
    let writes = vec![
        Write::Put {
            item: Item {
                data: serde_json::to_string(&incident).map_err(|e| corrupt("incident", e))?,
                version: item.version + 1,
                ..item.clone()
            },
            condition: Condition::Version(item.version),
        },
        Write::Put {
            item: Item {
                pk: scope.key(),
                data: entry_data.to_string(),
                ..entry.clone()
            },
            condition: Condition::None,
        },
        Write::Delete {
            pk: entry.pk.clone(),
            sk: entry.sk.clone(),
            condition: Condition::Version(entry.version),
        },
    ];
    match repo.store().transact(writes).await {
        Ok(()) => Ok(true),
        // Changed since it was read (a new alert): the next run moves it.
        Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn move_drill(repo: &Repo, old: &Item, new: Item) -> Result<bool, MigrateError> {
    let writes = vec![
        Write::Put {
            item: new,
            condition: Condition::Absent { now: i64::MIN },
        },
        Write::Delete {
            pk: old.pk.clone(),
            sk: old.sk.clone(),
            condition: Condition::Version(old.version),
        },
    ];
    match repo.store().transact(writes).await {
        Ok(()) => Ok(true),
        Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => {
            drop_item(repo, old).await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
