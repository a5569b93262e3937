//! The `backup` and `restore-drill` jobs run through the job runner on the embedded backend
//! (`TableBackups::embedded` over a SQLite store in a temporary data directory): what they
//! store, record, announce and page. Plus the AWS configuration, built offline.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use shipgate::backup::operations::{self as backup, BackupDeps};
use shipgate::config::ConfigError;
use shipgate::domain::policy::{Policy, EXAMPLE_POLICY};
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::jobs::backup::{BackupConfigError, TableBackups};
use shipgate::jobs::{self, JobContext, JobError, JobName, JobReport, MetricSink};
use shipgate::notify::{Notification, NotificationBody};
use shipgate::outbound::http_client;
use shipgate::service::Services;
use shipgate::store::{Condition, Item, ItemStore, Repo, Write};
use testkit::ManualClock;
use testkit::RecordingPublisher;

const ITEMS: usize = 300;

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn item(i: usize) -> Item {
    Item {
        pk: format!("DEP#{:04}", i / 5),
        sk: format!("V#{:02}", i % 5),
        version: 1 + (i % 3) as u64,
        expires_at: (i % 4 == 0).then_some(1_900_000_000 + i as i64),
        timeline: None,
        data: format!(r#"{{"n":{i},"note":"deploy é\nline"}}"#),
    }
}

struct Harness {
    dir: tempfile::TempDir,
    store: Arc<dyn ItemStore>,
    ctx: JobContext,
    clock: ManualClock,
    published: RecordingPublisher,
    metrics: MetricSink,
    backups: Arc<TableBackups>,
}

async fn harness(now: Timestamp) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ItemStore> = Arc::new(
        SqliteStore::open(dir.path().join("shipgate.db"), Durability::Normal).expect("sqlite"),
    );
    let writes: Vec<Write> = (0..ITEMS)
        .map(|i| Write::Put {
            item: item(i),
            condition: Condition::None,
        })
        .collect();
    for batch in writes.chunks(100) {
        store.transact(batch.to_vec()).await.expect("fill");
    }
    let clock = ManualClock::new(now);
    let published = RecordingPublisher::default();
    let services = Services {
        repo: Repo::new(Arc::clone(&store)),
        policy: Arc::new(Policy::example().expect("example policy")),
        github: None,
        publisher: Arc::new(published.clone()),
        clock: Arc::new(clock.clone()),
        policy_source: None,
    };
    let metrics = MetricSink::memory();
    let backups = Arc::new(
        TableBackups::embedded(dir.path(), Arc::clone(&store))
            .expect("embedded backups")
            .with_metrics(metrics.clone()),
    );
    let ctx = JobContext::new(services, http_client().expect("http"))
        .with_metrics(MetricSink::memory())
        .with_backups(backups.clone());
    Harness {
        dir,
        store,
        ctx,
        clock,
        published,
        metrics,
        backups,
    }
}

async fn count(store: &dyn ItemStore) -> u64 {
    let mut n = 0;
    let mut cursor = None;
    loop {
        let (items, next) = store.scan(0, 1, cursor).await.expect("scan");
        n += items.len() as u64;
        match next {
            Some(next) => cursor = Some(next),
            None => return n,
        }
    }
}

/// The `Job` notifications published for `job`, as (ok, summary, details, page).
fn job_notifications(
    published: &RecordingPublisher,
    job: JobName,
) -> Vec<(bool, String, serde_json::Value, bool)> {
    published
        .taken()
        .into_iter()
        .filter_map(|n: Notification| match n.body {
            NotificationBody::Job {
                job: name,
                ok,
                summary,
                details,
                page,
            } if name == job.as_str() => Some((ok, summary, details, page)),
            _ => None,
        })
        .collect()
}

async fn recorded(h: &Harness, job: JobName) -> JobReport {
    h.ctx
        .services
        .repo
        .get_meta::<JobReport>("job", job.as_str())
        .await
        .expect("read META#job")
        .expect("the run was recorded")
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_job_stores_a_manifest_announces_it_and_records_the_run() {
    let h = harness(t("2025-03-01T02:00:00Z")).await;
    let items_at_backup = count(h.store.as_ref()).await;

    let report = jobs::run(&h.ctx, JobName::Backup)
        .await
        .expect("backup runs");

    assert!(report.ok, "{report:?}");
    assert_eq!(
        report.summary,
        format!("backed up 1 table: shipgate {ITEMS} items; pruned 0")
    );
    let manifests = backup::list(h.backups.deps(), Some("shipgate"))
        .await
        .expect("list");
    assert_eq!(manifests.len(), 1);
    let manifest = &manifests[0];
    assert_eq!(manifest.items, items_at_backup);
    assert_eq!(manifest.created_at, t("2025-03-01T02:00:00Z"));
    let deps: &BackupDeps = h.backups.deps();
    let on_disk = h.dir.path().join("backups");
    assert!(on_disk
        .join(deps.manifest_key("shipgate", &manifest.backup_id))
        .is_file());
    assert!(on_disk
        .join(deps.object_key("shipgate", &manifest.backup_id))
        .is_file());
    let key_mode = std::fs::metadata(h.dir.path().join("backup.key"))
        .expect("master key created")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let entry = &report.details["backups"][0];
    assert_eq!(entry["backup_id"], manifest.backup_id.as_str());
    assert_eq!(entry["items"], items_at_backup);
    assert_eq!(
        entry["plaintext_sha256"],
        manifest.plaintext_sha256.as_str()
    );
    assert_eq!(entry["encrypted_bytes"], manifest.encrypted_bytes);
    assert_eq!(report.details["prune"]["deleted"], serde_json::json!([]));

    let sent = job_notifications(&h.published, JobName::Backup);
    assert_eq!(sent.len(), 1, "one announcement");
    let (ok, summary, details, page) = &sent[0];
    assert!(*ok && !*page);
    assert_eq!(summary, &report.summary);
    assert_eq!(details, &report.details);

    let stored = recorded(&h, JobName::Backup).await;
    assert!(stored.ok);
    assert_eq!(stored.summary, report.summary);
    assert_eq!(
        stored.details["backups"][0]["backup_id"],
        manifest.backup_id.as_str()
    );

    assert!(
        h.metrics
            .lines()
            .iter()
            .any(|l| l.contains("\"BackupItems\":300") && l.contains("\"Table\":\"shipgate\"")),
        "{:?}",
        h.metrics.lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_job_restores_every_item_reports_rpo_and_rto_and_deletes_the_scratch_file() {
    let h = harness(t("2025-03-01T02:00:00Z")).await;
    let items_at_backup = count(h.store.as_ref()).await;
    jobs::run(&h.ctx, JobName::Backup)
        .await
        .expect("backup runs");
    h.clock.advance(Duration::from_secs(3 * 3600 + 12 * 60));

    let report = jobs::run(&h.ctx, JobName::RestoreDrill)
        .await
        .expect("drill runs");

    assert!(report.ok, "{report:?}");
    assert!(
        report.summary.starts_with(&format!(
            "restore drill passed: shipgate {ITEMS} items, RPO 3h12m, RTO "
        )),
        "{}",
        report.summary
    );
    let table = &report.details["tables"][0];
    assert_eq!(table["table"], "shipgate");
    assert_eq!(table["ok"], true);
    assert_eq!(table["items"], items_at_backup);
    assert_eq!(table["restored_items"], items_at_backup);
    assert_eq!(table["sha256_ok"], true);
    assert_eq!(table["rpo_seconds"], 3 * 3600 + 12 * 60);
    assert!(table["rto_seconds"].as_f64().expect("rto") > 0.0);
    assert_eq!(table["scratch_discarded"], true);
    let scratch = table["scratch_table"].as_str().expect("scratch table");
    assert!(
        scratch.starts_with("shipgate-") && scratch.len() == "shipgate-".len() + 8,
        "a fresh scratch store per drill: {scratch}"
    );
    assert!(
        files_in(&h.dir.path().join("scratch")).is_empty(),
        "the scratch database and its WAL files are gone: {:?}",
        files_in(&h.dir.path().join("scratch"))
    );
    // The drill wrote into its own file, never into the live store (which only gained the
    // two job records).
    assert_eq!(count(h.store.as_ref()).await, items_at_backup + 2);

    let sent = job_notifications(&h.published, JobName::RestoreDrill);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].0 && !sent[0].3);
    let stored = recorded(&h, JobName::RestoreDrill).await;
    assert!(stored.ok);
    assert_eq!(
        stored.details["tables"][0]["restored_items"],
        items_at_backup
    );
    let lines = h.metrics.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"RestoreDrillRPO\":11520") && l.contains("shipgate")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("\"RestoreDrillRTO\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_of_a_corrupted_backup_fails_and_pages() {
    let h = harness(t("2025-03-01T02:00:00Z")).await;
    jobs::run(&h.ctx, JobName::Backup)
        .await
        .expect("backup runs");
    let manifest = backup::latest(h.backups.deps(), Some("shipgate"))
        .await
        .expect("list")
        .expect("a backup");
    let object = h
        .dir
        .path()
        .join("backups")
        .join(h.backups.deps().object_key("shipgate", &manifest.backup_id));
    let mut bytes = std::fs::read(&object).expect("read object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&object, bytes).expect("corrupt object");

    let report = jobs::run(&h.ctx, JobName::RestoreDrill)
        .await
        .expect("a failed drill is a report, not an error");

    assert!(!report.ok);
    assert!(
        report
            .summary
            .starts_with("restore drill failed: shipgate FAILED"),
        "{}",
        report.summary
    );
    let table = &report.details["tables"][0];
    assert_eq!(table["ok"], false);
    let error = table["error"].as_str().expect("error");
    assert!(error.contains("failed verification"), "{error}");

    let sent = job_notifications(&h.published, JobName::RestoreDrill);
    assert_eq!(sent.len(), 1);
    let (ok, _, _, page) = &sent[0];
    assert!(!*ok);
    assert!(*page, "a failed restore drill pages");
    assert!(!recorded(&h, JobName::RestoreDrill).await.ok);
    assert!(files_in(&h.dir.path().join("scratch")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_job_that_cannot_back_a_table_up_names_the_table_and_pages() {
    let h = harness(t("2025-03-01T02:00:00Z")).await;
    let key = h.dir.path().join("backup.key");
    std::fs::write(&key, [7u8; 32]).expect("key file");
    // A master key others can read is refused, so no data key can be made.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let err = jobs::run(&h.ctx, JobName::Backup)
        .await
        .expect_err("the backup fails");

    let JobError::Failed { job, message, .. } = &err else {
        panic!("expected JobError::Failed, got {err:?}");
    };
    assert_eq!(*job, JobName::Backup);
    assert!(message.starts_with("table shipgate: "), "{message}");
    assert!(message.contains("permissions 644"), "{message}");
    let sent = job_notifications(&h.published, JobName::Backup);
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].0);
    assert!(sent[0].3, "a failed backup pages");
    assert!(sent[0].1.contains("table shipgate"), "{}", sent[0].1);
    assert!(!recorded(&h, JobName::Backup).await.ok);
    assert!(backup::list(h.backups.deps(), None)
        .await
        .expect("list")
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// AWS configuration (no calls are made: clients are only built)

fn offline_sdk() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .build()
}

fn policy_with_tables(tables: &str) -> Policy {
    let text = EXAMPLE_POLICY.replace(r#"tables = ["shipgate"]"#, &format!("tables = {tables}"));
    assert_ne!(text, EXAMPLE_POLICY, "the example policy lists its tables");
    Policy::parse("test.toml", &text).expect("policy")
}

const STATE_TABLE: &str = "prod-shipgate-StateTable-1A2B3C4D5E";

#[test]
fn aws_backups_file_shipgates_table_under_its_logical_name_beside_the_policy_tables() {
    let vars = [
        ("SHIPGATE_BACKUP_BUCKET", "prod-backups"),
        (
            "SHIPGATE_KMS_KEY_ID",
            "arn:aws:kms:eu-west-1:123456789012:key/abc",
        ),
        ("SHIPGATE_TABLE", STATE_TABLE),
        ("SHIPGATE_SCRATCH_TABLE_PREFIX", "prod-shipgate-scratch-"),
    ];
    let policy = policy_with_tables(&format!(r#"["shipgate", "orders", "{STATE_TABLE}"]"#));

    let backups = TableBackups::aws(&offline_sdk(), &vars, &policy).expect("configured");

    assert_eq!(backups.tables(), vec!["shipgate", "orders"]);
    assert_eq!(backups.physical_table("shipgate"), Some(STATE_TABLE));
    assert_eq!(backups.physical_table("orders"), Some("orders"));
    let by_real_name = backups.source(STATE_TABLE).expect("found by its real name");
    assert_eq!(by_real_name.name(), "shipgate");
    assert!(backups.source("unknown").is_none());
    assert_eq!(backups.deps().prefix, "backups");
    assert_eq!(backups.deps().keys.provider(), "kms");
}

#[test]
fn aws_backups_need_a_bucket_and_a_key_and_refuse_a_bad_scratch_prefix() {
    let policy = Policy::example().expect("example policy");
    let missing = [
        ("SHIPGATE_KMS_KEY_ID", "alias/shipgate"),
        ("SHIPGATE_TABLE", STATE_TABLE),
    ];
    let err = TableBackups::aws(&offline_sdk(), &missing, &policy).expect_err("no bucket");
    assert!(
        matches!(&err, BackupConfigError::Config(ConfigError::Missing(v)) if v == "SHIPGATE_BACKUP_BUCKET"),
        "{err:?}"
    );

    let bad_prefix = [
        ("SHIPGATE_BACKUP_BUCKET", "prod-backups"),
        ("SHIPGATE_KMS_KEY_ID", "alias/shipgate"),
        ("SHIPGATE_TABLE", STATE_TABLE),
        ("SHIPGATE_SCRATCH_TABLE_PREFIX", "scratch tables/"),
    ];
    let err = TableBackups::aws(&offline_sdk(), &bad_prefix, &policy).expect_err("bad prefix");
    assert!(
        matches!(&err, BackupConfigError::Config(ConfigError::Invalid { var, .. }) if var == "SHIPGATE_SCRATCH_TABLE_PREFIX"),
        "{err:?}"
    );
}
