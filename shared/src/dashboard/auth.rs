//! The dashboard's sign-in: a token, checked in constant time, and the session cookie a
//! browser keeps after signing in with it. The cookie holds an HMAC of a fixed label under
//! the token, never the token itself, so a leaked cookie does not reveal the token, and
//! changing the token ends every session.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "shipgate_session";

/// The cookie value of a session signed in with `token`.
pub fn session_value(token: &SecretString) -> String {
    // HMAC takes a key of any length, so this cannot fail; an empty value would never match.
    match Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"shipgate dashboard session v1");
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Does `given` equal `expected`? In time that depends on the lengths only.
pub fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_derived_from_the_token_and_compared_whole() {
        let token = SecretString::from("a-long-enough-dashboard-token-0123456789");
        let value = session_value(&token);
        assert_eq!(value.len(), 64);
        assert!(!value.contains("dashboard-token"));
        assert_ne!(
            value,
            session_value(&SecretString::from("another-token-0123456789abcdef"))
        );
        assert!(same(&value, &value));
        assert!(!same(&value[..63], &value));
        assert!(!same("", ""));
        assert_eq!(
            cookie("a=1; shipgate_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("shipgate_session_x=1", SESSION_COOKIE), None);
    }
}
