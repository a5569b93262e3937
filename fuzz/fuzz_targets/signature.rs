//! GitHub `X-Hub-Signature-256`, Slack v0 and bearer verification with arbitrary secrets,
//! headers, bodies and clocks: never a panic, and whatever is signed verifies.
//!
//! Input, one field a line so seeds stay readable: secret, `X-Hub-Signature-256`,
//! `X-Slack-Request-Timestamp`, `X-Slack-Signature`, `Authorization`, now (unix seconds),
//! signing time (unix seconds), then the body. A header whose line is missing is absent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use shipgate::signature::{
    sign_github, sign_slack, verify_bearer, verify_github, verify_slack, SLACK_MAX_SKEW_SECS,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(8, '\n');
    let mut next = || fields.next();
    let secret = SecretString::from(next().unwrap_or_default().to_owned());
    let github_header = next();
    let slack_timestamp = next();
    let slack_signature = next();
    let authorization = next();
    let now: i64 = next()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1_531_420_618);
    let signed_at: i64 = next().and_then(|t| t.trim().parse().ok()).unwrap_or(now);
    let body = next().unwrap_or_default().as_bytes();

    let _ = verify_github(&secret, body, github_header);
    let _ = verify_slack(&secret, body, slack_timestamp, slack_signature, now);
    let _ = verify_bearer(&secret, authorization);

    // What the signers produce must verify, and only inside the replay window.
    let github = sign_github(&secret, body);
    assert_eq!(verify_github(&secret, body, Some(&github)), Ok(()));
    let slack = sign_slack(&secret, signed_at, body);
    let ts = signed_at.to_string();
    let fresh = now
        .checked_sub(signed_at)
        .is_some_and(|skew| skew.checked_abs().is_some_and(|s| s <= SLACK_MAX_SKEW_SECS));
    let verdict = verify_slack(&secret, body, Some(&ts), Some(&slack), now);
    assert_eq!(verdict.is_ok(), fresh, "ts {ts} now {now} -> {verdict:?}");
});
