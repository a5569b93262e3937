//! Inputs found by, or written for, the fuzz targets in `fuzz/` (see fuzz/README.md), kept as
//! plain tests so `cargo test` catches a regression without nightly or libFuzzer. Every parser
//! here faces data from outside; each must answer hostile input with an `Err`, never a panic.

use std::path::PathBuf;

use secrecy::SecretString;
use shipgate::backup::{
    backup_context, key_check, verify, BackupError, BackupReader, BackupStats, KeyInfo,
    KeyProviderKind, Manifest,
};
use shipgate::domain::policy::{parse_duration, ref_matches, Policy, TimeOfDay};
use shipgate::signature::{sign_slack, verify_bearer, verify_github, verify_slack, SignatureError};

/// The key and backup id the backup fuzz targets and their seeds use.
const KEY: [u8; 32] = [7; 32];
const BACKUP_ID: &str = "fuzz-backup";
/// A realistic clock: the Slack signing vector's timestamp.
const NOW: i64 = 1_531_420_618;

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Strings that have broken header parsers elsewhere: empty, separators only, odd and
/// over-long hex, multi-byte characters where hex belongs, NULs and control characters.
fn hostile_values(scheme: &str) -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "=".into(),
        format!("{scheme}="),
        format!("{scheme}=="),
        format!("{scheme}={}", "a".repeat(63)),
        format!("{scheme}={}", "a".repeat(65)),
        format!("{scheme}={}", "é".repeat(32)),
        format!("{scheme}={}", "0".repeat(1 << 16)),
        format!("{scheme}=\0{}", "0".repeat(63)),
        format!("{}={}", "é", "0".repeat(64)),
        "\u{feff}sha256=00".into(),
        "sha256\u{3000}=00".into(),
    ]
}

#[test]
fn github_verification_refuses_hostile_signature_headers() {
    let s = secret("It's a Secret to Everybody");
    for header in hostile_values("sha256") {
        let verdict = verify_github(&s, b"Hello, World!", Some(&header));
        assert!(verdict.is_err(), "{header:?} was accepted");
    }
    assert_eq!(
        verify_github(&s, b"", None),
        Err(SignatureError::Missing("X-Hub-Signature-256"))
    );
}

#[test]
fn slack_verification_refuses_hostile_signature_headers() {
    let s = secret("8f742231b10e8888abcd99yyyzzz85a5");
    for header in hostile_values("v0") {
        let verdict = verify_slack(&s, b"token=x", Some("1531420618"), Some(&header), NOW);
        assert!(verdict.is_err(), "{header:?} was accepted");
    }
}

#[test]
fn slack_verification_refuses_hostile_timestamps() {
    let s = secret("k");
    for ts in [
        "",
        " ",
        "1e9",
        "0x5b47",
        "١٥٣١٤٢٠٦١٨",
        "99999999999999999999",
        "-99999999999999999999",
        "1531420618\0",
    ] {
        let sig = sign_slack(&s, NOW, b"body");
        let verdict = verify_slack(&s, b"body", Some(ts), Some(&sig), NOW);
        assert!(verdict.is_err(), "{ts:?} was accepted");
    }
}

/// Found by reading what the `signature` target covers: `verify_slack` computes
/// `(now_unix - ts).abs()`, which overflows for a timestamp near `i64::MIN`. With overflow
/// checks (debug builds, tests, fuzzing) that is a panic on an unauthenticated header.
#[test]
fn slack_timestamp_of_i64_min_is_stale_not_an_overflow() {
    let s = secret("k");
    let ts = i64::MIN.to_string();
    let sig = sign_slack(&s, i64::MIN, b"body");
    assert_eq!(
        verify_slack(&s, b"body", Some(&ts), Some(&sig), NOW),
        Err(SignatureError::Stale)
    );
}

/// Without overflow checks (release builds) the same subtraction wraps: for
/// `ts = now + i64::MIN` the skew wraps to `i64::MIN`, whose `abs()` is still `i64::MIN`, which
/// is not greater than 300, so the freshness check passed a timestamp 292 billion years old.
#[test]
fn slack_timestamp_whose_skew_wraps_to_i64_min_is_stale() {
    let s = secret("k");
    let signed_at = NOW.wrapping_add(i64::MIN);
    let ts = signed_at.to_string();
    let sig = sign_slack(&s, signed_at, b"body");
    assert_eq!(
        verify_slack(&s, b"body", Some(&ts), Some(&sig), NOW),
        Err(SignatureError::Stale)
    );
}

#[test]
fn slack_clock_at_the_extremes_does_not_overflow() {
    let s = secret("k");
    for (now, ts) in [
        (i64::MAX, "-1"),
        (i64::MIN, "1"),
        (i64::MIN, "0"),
        (i64::MAX, "0"),
    ] {
        let verdict = verify_slack(&s, b"body", Some(ts), Some("v0=00"), now);
        assert_eq!(verdict, Err(SignatureError::Stale), "now {now} ts {ts}");
    }
}

#[test]
fn bearer_verification_refuses_hostile_authorization_headers() {
    let t = secret("token");
    for header in [
        "",
        "Bearer",
        "Bearer\u{a0}token",
        "Bearer\ttoken",
        "Bearertoken",
        "\u{feff}Bearer token",
        "BEARER  ",
        "Bearer token\0",
    ] {
        let verdict = verify_bearer(&t, Some(header));
        assert!(verdict.is_err(), "{header:?} was accepted");
    }
}

#[test]
fn policy_parser_answers_hostile_files_with_errors() {
    let deep_array = format!("x = {}{}", "[".repeat(5_000), "]".repeat(5_000));
    let deep_table = format!("x = {}{}", "{a=".repeat(5_000), "}".repeat(5_000));
    let long_line = format!(
        "[environments.staging]\nallowed_refs = [\"{}\"",
        "é".repeat(10_000)
    );
    for text in [
        "\u{feff}",
        "[environments]\nstaging = 1\n",
        "[environments.\"\"]\n",
        "[environments.staging]\napprovals_required = 18446744073709551616\n",
        "[environments.staging]\napprovals_required = -1\n",
        "[environments.staging]\nverification_window = \"18446744073709551615d\"\n",
        "[environments.staging]\nverification_window = \"1é\"\n",
        "[[environments.staging.windows]]\ndays = [\"Mon\"]\nstart = \"24:01\"\nend = \"é:00\"\n",
        "[[probes]]\n",
        "identities = \"x\"\n",
        "[alerts.severity_map]\n\"\" = \"\"\n",
        "[environments.a]\n[environments.a]\n",
        "é = \"\u{0}\"\n",
        &deep_array,
        &deep_table,
        &long_line,
    ] {
        match Policy::parse("policy.toml", text) {
            Ok(_) => {}
            Err(errors) => assert!(!errors.to_string().is_empty()),
        }
    }
}

#[test]
fn duration_and_time_of_day_parsers_refuse_hostile_text() {
    for text in [
        "",
        "é",
        "1é",
        "18446744073709551616s",
        "213503982334602d",
        "1d1d",
        "d",
    ] {
        assert!(parse_duration(text).is_err(), "{text:?} was accepted");
    }
    for text in [
        "", ":", "é:00", "0é:00", "24:01", "99:99", "-1:00", "+1:00", "09:+5",
    ] {
        assert_eq!(TimeOfDay::parse(text), None, "{text:?} was accepted");
    }
}

#[test]
fn ref_globs_handle_empty_and_separator_only_input() {
    for (pattern, git_ref) in [
        ("", ""),
        ("/", "/"),
        ("**", ""),
        ("**/**", "/"),
        ("*", "refs/heads/"),
        ("refs/", "refs/"),
        ("é*", "é"),
    ] {
        // No expectation on the answer beyond being one: these must simply return.
        let _ = ref_matches(pattern, git_ref);
    }
    assert!(ref_matches("é*", "éa"));
    assert!(!ref_matches("é*", "e"));
}

fn valid_manifest_json() -> serde_json::Value {
    serde_json::from_slice(&seed("backup_manifest", "valid.json")).expect("seed is JSON")
}

#[test]
fn the_manifest_seed_is_a_valid_manifest() {
    let manifest = Manifest::parse(&seed("backup_manifest", "valid.json")).expect("seed parses");
    assert_eq!(manifest.backup_id, BACKUP_ID);
}

#[test]
fn manifest_parser_answers_hostile_manifests_with_errors() {
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"{}".to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
    ];
    for (pointer, value) in [
        ("/format_version", serde_json::json!(256)),
        ("/backup_id", serde_json::json!("../../etc/passwd")),
        ("/backup_id", serde_json::json!("é".repeat(200))),
        ("/created_at", serde_json::json!("2026-13-45T99:99:99Z")),
        ("/items", serde_json::json!(-1)),
        ("/items", serde_json::json!(1e300)),
        ("/chunk_size", serde_json::json!(u64::MAX)),
        ("/chunk_size", serde_json::json!(0)),
        ("/chunks", serde_json::json!(0)),
        ("/plaintext_sha256", serde_json::json!("é".repeat(32))),
        ("/key/wrapped_key_b64", serde_json::json!("!!!")),
        ("/key/wrapped_key_b64", serde_json::json!("")),
        ("/key/key_check", serde_json::json!("é".repeat(16))),
        ("/key/provider", serde_json::json!("vault")),
        ("/key/encryption_context", serde_json::json!({})),
    ] {
        let mut doc = valid_manifest_json();
        *doc.pointer_mut(pointer).expect("pointer exists") = value;
        cases.push(serde_json::to_vec(&doc).expect("serialises"));
    }
    let mut trailing = serde_json::to_vec(&valid_manifest_json()).expect("serialises");
    trailing.extend_from_slice(b" {}");
    cases.push(trailing);
    for case in cases {
        assert!(
            Manifest::parse(&case).is_err(),
            "{} was accepted",
            String::from_utf8_lossy(&case[..case.len().min(200)])
        );
    }
}

fn manifest_for(chunk_size: u32) -> Manifest {
    let stats = BackupStats {
        items: 2,
        plaintext_bytes: 0,
        plaintext_sha256: "0".repeat(64),
        compressed_bytes: 0,
        encrypted_bytes: 0,
        chunks: 1,
    };
    let key = KeyInfo {
        provider: KeyProviderKind::Local,
        key_id: "fuzz".into(),
        wrapped_key_b64: "AAAA".into(),
        encryption_context: backup_context("fuzz-table", BACKUP_ID),
        key_check: key_check(&KEY),
    };
    Manifest::new(
        BACKUP_ID,
        "fuzz-table",
        jiff::Timestamp::UNIX_EPOCH,
        chunk_size,
        &stats,
        key,
    )
}

fn read_all(object: &[u8]) -> Result<Vec<Vec<u8>>, BackupError> {
    BackupReader::new(object, &KEY, BACKUP_ID)?.collect()
}

#[test]
fn the_backup_reader_seeds_are_valid_backups() {
    // The seeds are sealed by fuzz/gen_backup_seeds.py, not by BackupWriter; reading them back
    // shows that script follows the format, so the fuzzer starts from inputs that get deep.
    let records = read_all(&seed("backup_reader", "two-records")).expect("seed reads");
    assert_eq!(records.len(), 2);
    assert!(records[0].starts_with(b"{\"pk\":\"DEP#1\""));
    assert_eq!(
        read_all(&seed("backup_reader", "two-chunks"))
            .expect("seed reads")
            .len(),
        60
    );
    assert_eq!(
        read_all(&seed("backup_reader", "empty-backup"))
            .expect("seed reads")
            .len(),
        0
    );
}

#[test]
fn backup_reader_answers_hostile_objects_with_errors() {
    let valid = seed("backup_reader", "two-chunks");
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"SGBK".to_vec(),
        seed("backup_reader", "header-only"),
        seed("backup_reader", "truncated-frame"),
        valid[..valid.len() - 1].to_vec(),
        [&valid[..], &valid[21..49]].concat(),
    ];
    // Header fields at their limits: chunk size 0 and u32::MAX, id length 0 and 255, version 2.
    for (at, bytes) in [
        (5usize, vec![0, 0, 0, 0]),
        (5, vec![0xff, 0xff, 0xff, 0xff]),
        (9, vec![0]),
        (9, vec![0xff]),
        (4, vec![2]),
    ] {
        let mut case = valid.clone();
        case[at..at + bytes.len()].copy_from_slice(&bytes);
        cases.push(case);
    }
    // A frame whose length field claims 4 GiB: refused before anything is allocated for it.
    let mut huge = valid.clone();
    huge[21 + 12..21 + 16].copy_from_slice(&[0xff; 4]);
    cases.push(huge);
    for (i, case) in cases.iter().enumerate() {
        assert!(read_all(case).is_err(), "case {i} was accepted");
        assert!(
            verify(&case[..], &KEY, BACKUP_ID, &manifest_for(1024)).is_err(),
            "case {i} verified"
        );
    }
}

/// Found by the `ref_glob` target (a 10 s timeout on a 315-byte input): `match_segments`
/// retries every split of the segments at every `**`, so a pattern with several `**` against a
/// ref with many segments takes exponential time. Branch names are chosen by whoever pushes.
#[test]
fn ref_glob_with_many_double_stars_answers_in_bounded_time() {
    let pattern = "**/**/**/**/**/**/**/**/no-match";
    let git_ref = vec!["a"; 60].join("/");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ref_matches(pattern, &git_ref));
    });
    let answer = rx.recv_timeout(std::time::Duration::from_secs(2));
    assert_eq!(answer, Ok(false), "ref_matches took more than 2 s");
}
