//! Authentication of inbound requests, done before anything is parsed.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`.
//! - Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{raw body}")>` with
//!   `X-Slack-Request-Timestamp` no more than [`SLACK_MAX_SKEW_SECS`] from now.
//! - Alert sources: `Authorization: Bearer <token>`.
//!
//! Every comparison is constant-time (`subtle`); error values never carry the secret, the
//! expected signature or the received one, so they are safe to log.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Slack's documented replay window.
pub const SLACK_MAX_SKEW_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("unsupported signature scheme in {0}")]
    UnsupportedScheme(&'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("bearer token does not match")]
    WrongToken,
    #[error("request timestamp is outside the {SLACK_MAX_SKEW_SECS}s replay window")]
    Stale,
}

fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Decodes a signature's 64 hex digits. The reference verifiers (octokit's
/// `@octokit/webhooks-methods` `verify`, slack_sdk's `SignatureVerifier.is_valid`) compare
/// the header with the lowercase hex they compute, so uppercase digits are a mismatch there
/// and here.
fn decode_hex_32(hex_str: &str, header: &'static str) -> Result<[u8; 32], SignatureError> {
    if hex_str.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SignatureError::Mismatch);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| SignatureError::Malformed(header))?;
    Ok(out)
}

/// Verifies GitHub's `X-Hub-Signature-256` header value over the raw body.
pub fn verify_github(
    secret: &SecretString,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    const H: &str = "X-Hub-Signature-256";
    let value = header.ok_or(SignatureError::Missing(H))?.trim();
    let hex_sig = match value.split_once('=') {
        Some(("sha256", hex_sig)) => hex_sig,
        // `sha1=` is GitHub's legacy header format; it must never be accepted here.
        Some(_) => return Err(SignatureError::UnsupportedScheme(H)),
        None => return Err(SignatureError::Malformed(H)),
    };
    let given = decode_hex_32(hex_sig, H)?;
    let expected = hmac_sha256(secret.expose_secret().as_bytes(), &[body]);
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Computes the `X-Hub-Signature-256` value for a body (for the demo, tests and load tools).
pub fn sign_github(secret: &SecretString, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.expose_secret().as_bytes(), &[body]))
    )
}

/// Verifies a Slack request: timestamp freshness first, then the v0 signature.
pub fn verify_slack(
    secret: &SecretString,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_unix: i64,
) -> Result<(), SignatureError> {
    const TS: &str = "X-Slack-Request-Timestamp";
    const SIG: &str = "X-Slack-Signature";
    let ts_str = timestamp.ok_or(SignatureError::Missing(TS))?.trim();
    let ts: i64 = ts_str.parse().map_err(|_| SignatureError::Malformed(TS))?;
    // abs_diff: a timestamp near i64::MIN must be stale, not an overflow.
    if now_unix.abs_diff(ts) > SLACK_MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let value = signature.ok_or(SignatureError::Missing(SIG))?.trim();
    let hex_sig = match value.split_once('=') {
        Some(("v0", hex_sig)) => hex_sig,
        Some(_) => return Err(SignatureError::UnsupportedScheme(SIG)),
        None => return Err(SignatureError::Malformed(SIG)),
    };
    let given = decode_hex_32(hex_sig, SIG)?;
    let expected = hmac_sha256(
        secret.expose_secret().as_bytes(),
        &[b"v0:", ts_str.as_bytes(), b":", body],
    );
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Computes Slack's `X-Slack-Signature` value (for the demo, tests and load tools).
pub fn sign_slack(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(
        secret.expose_secret().as_bytes(),
        &[b"v0:", ts.as_bytes(), b":", body],
    );
    format!("v0={}", hex::encode(mac))
}

/// Verifies an `Authorization: Bearer <token>` header in constant time.
///
/// Both sides are hashed first so the comparison time does not depend on the token's length.
pub fn verify_bearer(
    token: &SecretString,
    authorization: Option<&str>,
) -> Result<(), SignatureError> {
    const H: &str = "Authorization";
    let value = authorization.ok_or(SignatureError::Missing(H))?.trim();
    let given = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return Err(SignatureError::UnsupportedScheme(H)),
        None => return Err(SignatureError::Malformed(H)),
    };
    let a = hmac_sha256(
        b"shipgate bearer compare",
        &[token.expose_secret().as_bytes()],
    );
    let b = hmac_sha256(b"shipgate bearer compare", &[given.as_bytes()]);
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(SignatureError::WrongToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn bearer_accepts_the_token_and_refuses_everything_else() {
        let t = secret("s3cret-token");
        assert_eq!(verify_bearer(&t, Some("Bearer s3cret-token")), Ok(()));
        assert_eq!(verify_bearer(&t, Some("bearer s3cret-token")), Ok(()));
        assert_eq!(
            verify_bearer(&t, Some("Bearer s3cret-tokeN")),
            Err(SignatureError::WrongToken)
        );
        assert_eq!(
            SignatureError::WrongToken.to_string(),
            "bearer token does not match"
        );
        assert_eq!(
            verify_bearer(&t, Some("Bearer ")),
            Err(SignatureError::Malformed("Authorization"))
        );
        assert_eq!(
            verify_bearer(&t, Some("Bearer  ")),
            Err(SignatureError::Malformed("Authorization"))
        );
        assert_eq!(
            verify_bearer(&t, Some("Basic czNjcmV0")),
            Err(SignatureError::UnsupportedScheme("Authorization"))
        );
        assert_eq!(
            verify_bearer(&t, None),
            Err(SignatureError::Missing("Authorization"))
        );
    }

    #[test]
    fn github_refuses_legacy_sha1_header() {
        let s = secret("k");
        assert_eq!(
            verify_github(
                &s,
                b"x",
                Some("sha1=0000000000000000000000000000000000000000")
            ),
            Err(SignatureError::UnsupportedScheme("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn github_signatures_round_trip() {
        let s = secret("k");
        let sig = sign_github(&s, b"body");
        assert_eq!(verify_github(&s, b"body", Some(&sig)), Ok(()));
        assert_eq!(
            verify_github(&s, b"body!", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_github(&s, b"body", Some("sha256=zz")),
            Err(SignatureError::Malformed("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn slack_signatures_round_trip_inside_the_window() {
        let s = secret("k");
        let sig = sign_slack(&s, 1000, b"payload=x");
        assert_eq!(
            verify_slack(&s, b"payload=x", Some("1000"), Some(&sig), 1300),
            Ok(())
        );
        assert_eq!(
            verify_slack(&s, b"payload=x", Some("1000"), Some(&sig), 1301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_slack(&s, b"payload=x", Some("1000"), Some(&sig), 699),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_slack(&s, b"payload=y", Some("1000"), Some(&sig), 1000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn uppercase_hex_is_a_mismatch_as_the_reference_verifiers_read_it() {
        let s = secret("a webhook secret of some length");
        let sig = sign_github(&s, b"body");
        let upper = format!("sha256={}", sig["sha256=".len()..].to_ascii_uppercase());
        assert_ne!(upper, sig);
        assert_eq!(
            verify_github(&s, b"body", Some(&upper)),
            Err(SignatureError::Mismatch)
        );
        let sig = sign_slack(&s, 1000, b"payload=x");
        let upper = format!("v0={}", sig["v0=".len()..].to_ascii_uppercase());
        assert_eq!(
            verify_slack(&s, b"payload=x", Some("1000"), Some(&upper), 1000),
            Err(SignatureError::Mismatch)
        );
    }
}
