//! The vendors' documented signing vectors verify, and any change to them does not.

use secrecy::SecretString;
use shipgate::signature::{verify_github, verify_slack, SignatureError};

fn vector(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    serde_json::from_str(&text).expect("vector json")
}

fn field<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().expect("string field")
}

#[test]
fn github_documented_vector_verifies() {
    let v = vector("github-signing-vector.json");
    let secret = SecretString::from(field(&v, "secret").to_string());
    let body = field(&v, "payload").as_bytes();
    assert_eq!(
        verify_github(&secret, body, Some(field(&v, "header_value"))),
        Ok(())
    );
}

#[test]
fn github_vector_with_one_flipped_hex_digit_fails() {
    let v = vector("github-signing-vector.json");
    let secret = SecretString::from(field(&v, "secret").to_string());
    let mut sig = field(&v, "header_value").to_string();
    let last = sig.pop().expect("non-empty");
    sig.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        verify_github(&secret, field(&v, "payload").as_bytes(), Some(&sig)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn github_signature_is_refused_when_missing_or_for_another_body() {
    let v = vector("github-signing-vector.json");
    let secret = SecretString::from(field(&v, "secret").to_string());
    assert_eq!(
        verify_github(&secret, b"Hello, World!", None),
        Err(SignatureError::Missing("X-Hub-Signature-256"))
    );
    assert_eq!(
        verify_github(&secret, b"Hello, World?", Some(field(&v, "header_value"))),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn slack_documented_vector_verifies_with_the_clock_at_its_timestamp() {
    let v = vector("slack-signing-vector.json");
    let secret = SecretString::from(field(&v, "secret").to_string());
    let ts = field(&v, "timestamp");
    let now: i64 = ts.parse().expect("timestamp");
    assert_eq!(
        verify_slack(
            &secret,
            field(&v, "body").as_bytes(),
            Some(ts),
            Some(field(&v, "signature")),
            now
        ),
        Ok(())
    );
}

#[test]
fn slack_documented_vector_is_stale_with_the_real_clock() {
    let v = vector("slack-signing-vector.json");
    let secret = SecretString::from(field(&v, "secret").to_string());
    let now = jiff::Timestamp::now().as_second();
    assert_eq!(
        verify_slack(
            &secret,
            field(&v, "body").as_bytes(),
            Some(field(&v, "timestamp")),
            Some(field(&v, "signature")),
            now
        ),
        Err(SignatureError::Stale)
    );
}
