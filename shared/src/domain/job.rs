//! The scheduled jobs' names and the record each run leaves (`META#job` / `{name}`): plain data
//! that the jobs write and the use cases (a rollback drill finishing on a deployment status)
//! record too.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The jobs there are; their names are the `{"job": NAME}` the schedules send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobName {
    Backup,
    RestoreDrill,
    RollbackDrill,
    DoraReport,
    Sweeper,
    HealthProbes,
    /// Moves the store to the current schema (see `crate::store::migrate`); on AWS it is
    /// invoked once after a deploy that changes the schema, and the sweeper runs it when it
    /// finds the store behind.
    Migrate,
}

impl JobName {
    pub const ALL: [JobName; 7] = [
        JobName::Backup,
        JobName::RestoreDrill,
        JobName::RollbackDrill,
        JobName::DoraReport,
        JobName::Sweeper,
        JobName::HealthProbes,
        JobName::Migrate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Backup => "backup",
            JobName::RestoreDrill => "restore-drill",
            JobName::RollbackDrill => "rollback-drill",
            JobName::DoraReport => "dora-report",
            JobName::Sweeper => "sweeper",
            JobName::HealthProbes => "health-probes",
            JobName::Migrate => "migrate",
        }
    }

    /// Whether a failure of this job pages someone: losing backups or the proof that restores
    /// and rollbacks work is urgent; a late report or a sweep that will run again is not.
    /// (Probes page through the incidents they open.)
    pub fn pages_on_failure(self) -> bool {
        matches!(
            self,
            JobName::Backup | JobName::RestoreDrill | JobName::RollbackDrill
        )
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job name that is not one of [`JobName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job {given:?}; expected one of: backup, restore-drill, rollback-drill, dora-report, sweeper, health-probes, migrate")]
pub struct UnknownJob {
    pub given: String,
}

impl FromStr for JobName {
    type Err = UnknownJob;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        JobName::ALL
            .into_iter()
            .find(|j| j.as_str() == wanted)
            .ok_or_else(|| UnknownJob {
                given: s.to_string(),
            })
    }
}

impl Serialize for JobName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The recorded result of one run (`META#job` / `{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: JobName,
    pub ok: bool,
    pub summary: String,
    #[serde(default)]
    pub details: serde_json::Value,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The schedule tick this run answers, for scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// True when this tick had already been handled: nothing was done.
    #[serde(default)]
    pub duplicate: bool,
}
