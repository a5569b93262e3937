//! The names and ids shipgate receives from GitHub, parsed once at the edge: repository
//! names, environment names, commit shas, shipgate's own deployment ids and the states of a
//! GitHub deployment status.
//!
//! Each type can only hold a value that passed its check, so code past the edge never
//! re-validates. All of them serialise as the plain string they were parsed from (a sha is
//! stored lowercase, as GitHub sends it), so JSON on the wire and records in the store are
//! byte-for-byte what they were when these fields were `String`s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name or id was refused. Messages say what the rule is and never repeat the input,
/// which may be long or hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("repository must be `owner/name`")]
    RepoShape,
    #[error("repository owner must be 1 to 39 of A-Z, a-z, 0-9 and `-`")]
    RepoOwner,
    #[error(
        "repository name must be 1 to 100 of A-Z, a-z, 0-9, `.`, `_` and `-`, and not `.` or `..`"
    )]
    RepoName,
    #[error("environment name is empty")]
    EnvEmpty,
    #[error("environment name is longer than {max} characters", max = EnvName::MAX_CHARS)]
    EnvTooLong,
    #[error("environment name contains a control character")]
    EnvControl,
    #[error("commit sha must be {min} to {max} hex digits (got {len} characters)", min = Sha::MIN_LEN, max = Sha::MAX_LEN)]
    ShaLength { len: usize },
    #[error("commit sha must be hex digits only")]
    ShaDigits,
    #[error("deployment id must be 1 to {max} of A-Z, a-z, 0-9, `-`, `_` and `.`", max = DeploymentId::MAX_LEN)]
    DeploymentId,
}

/// The string-like plumbing every id shares: `as_str`, `Display`, `AsRef<str>`, comparisons
/// with string slices (so `assert_eq!(ev.sha, "…")` reads as before), `FromStr` through
/// `parse`, and the `String` conversions serde uses.
macro_rules! string_id {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$ty> for str {
            fn eq(&self, other: &$ty) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$ty> for &str {
            fn eq(&self, other: &$ty) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$ty> for String {
            fn eq(&self, other: &$ty) -> bool {
                *self == other.0
            }
        }

        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $ty::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $ty::parse(&s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                $ty::parse(s)
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }
    };
}

/// A repository as GitHub spells it, `owner/name`: the owner 1 to 39 of `A-Za-z0-9-`, the
/// name 1 to 100 of `A-Za-z0-9._-` and neither `.` nor `..`. Case is kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub const MAX_OWNER_LEN: usize = 39;
    pub const MAX_NAME_LEN: usize = 100;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (owner, name) = s.split_once('/').ok_or(IdError::RepoShape)?;
        let owner_ok = (1..=Self::MAX_OWNER_LEN).contains(&owner.len())
            && owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !owner_ok {
            return Err(IdError::RepoOwner);
        }
        let name_ok = (1..=Self::MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && name != "."
            && name != "..";
        if !name_ok {
            return Err(IdError::RepoName);
        }
        Ok(RepoName(s.to_string()))
    }

    /// The account that owns the repository.
    pub fn owner(&self) -> &str {
        self.0.split_once('/').map_or("", |(owner, _)| owner)
    }

    /// The repository's name within its owner.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, name)| name)
    }
}

string_id!(RepoName);

/// A GitHub environment name: not blank, at most 255 characters, no control characters.
/// Kept exactly as given (GitHub matches environment names case-insensitively, policy files
/// name them as GitHub shows them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.trim().is_empty() {
            return Err(IdError::EnvEmpty);
        }
        if s.chars().nth(Self::MAX_CHARS).is_some() {
            return Err(IdError::EnvTooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::EnvControl);
        }
        Ok(EnvName(s.to_string()))
    }
}

string_id!(EnvName);

/// A git commit id in hex, stored lowercase.
///
/// GitHub sends full ids: 40 digits (SHA-1) or 64 (SHA-256 repositories). Abbreviated ids
/// are accepted too, down to the 4 digits git itself accepts as an object name
/// (`MINIMUM_ABBREV`), because people, scripts, the load generator and test fixtures name
/// commits that way (`9f0c1e2`, `abc123`); anything shorter git would not resolve either.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha(String);

impl Sha {
    pub const MIN_LEN: usize = 4;
    pub const MAX_LEN: usize = 64;
    /// How many digits [`Sha::short`] shows.
    pub const SHORT_LEN: usize = 7;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&s.len()) {
            return Err(IdError::ShaLength {
                len: s.chars().count(),
            });
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::ShaDigits);
        }
        Ok(Sha(s.to_ascii_lowercase()))
    }

    /// The first seven digits, for people.
    pub fn short(&self) -> &str {
        short_sha(&self.0)
    }
}

string_id!(Sha);

/// The first seven characters of a sha held as plain text (records read from storage,
/// command-line input), or all of it when shorter; the same cut as [`Sha::short`].
pub fn short_sha(sha: &str) -> &str {
    sha.get(..Sha::SHORT_LEN).unwrap_or(sha)
}

/// shipgate's own id of a deployment record: `dep-` and a UUIDv7 in simple form for records
/// shipgate creates ([`DeploymentId::new`]). Ids are also read back from Slack buttons and
/// GitHub deployment payloads, so parsing accepts any 1 to 100 of `A-Za-z0-9-_.`: enough to
/// keep them safe inside store keys and button values without tying old records to today's
/// format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentId(String);

impl DeploymentId {
    pub const MAX_LEN: usize = 100;

    /// A fresh id: `dep-` and a time-ordered UUIDv7.
    // No `Default`: a default that is a different fresh id on every call would surprise.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        DeploymentId(format!("dep-{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(IdError::DeploymentId);
        }
        Ok(DeploymentId(s.to_string()))
    }
}

string_id!(DeploymentId);

/// The state of a GitHub deployment status (`deployment_status.state`).
///
/// GitHub's REST documentation lists `error`, `failure`, `inactive`, `in_progress`,
/// `queued`, `pending` and `success`; its webhook schema also has `waiting` (a deployment
/// held by a protection rule). Anything else GitHub may add later is kept as
/// [`GitHubDeploymentState::Other`] rather than refused, so a new state is recorded and
/// otherwise ignored, as an unknown state always was.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum GitHubDeploymentState {
    Error,
    Failure,
    Inactive,
    InProgress,
    Queued,
    Pending,
    Success,
    Waiting,
    /// A state this version of shipgate does not know, exactly as GitHub sent it.
    Other(String),
}

impl GitHubDeploymentState {
    pub fn parse(s: &str) -> Self {
        match s {
            "error" => Self::Error,
            "failure" => Self::Failure,
            "inactive" => Self::Inactive,
            "in_progress" => Self::InProgress,
            "queued" => Self::Queued,
            "pending" => Self::Pending,
            "success" => Self::Success,
            "waiting" => Self::Waiting,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Error => "error",
            Self::Failure => "failure",
            Self::Inactive => "inactive",
            Self::InProgress => "in_progress",
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Waiting => "waiting",
            Self::Other(s) => s,
        }
    }

    /// The deployment ended badly (`failure` or `error`).
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failure | Self::Error)
    }

    /// The deployment is on its way (`queued`, `pending` or `in_progress`).
    pub fn is_started(&self) -> bool {
        matches!(self, Self::Queued | Self::Pending | Self::InProgress)
    }

    /// No further status of this deployment is expected to change the outcome (`success`,
    /// `failure` or `error`).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Success) || self.is_failed()
    }
}

impl fmt::Display for GitHubDeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for GitHubDeploymentState {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for GitHubDeploymentState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for GitHubDeploymentState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl FromStr for GitHubDeploymentState {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl From<String> for GitHubDeploymentState {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

impl From<&str> for GitHubDeploymentState {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl From<GitHubDeploymentState> for String {
    fn from(state: GitHubDeploymentState) -> String {
        match state {
            GitHubDeploymentState::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn repo_names_keep_githubs_rules() {
        for ok in [
            "octo-org/hello-world",
            "a/b",
            "Octocat/Hello.World_2",
            "acme/.github",
            "acme/...",
            &format!("{}/{}", "o".repeat(39), "n".repeat(100)),
        ] {
            let repo = RepoName::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(repo, ok);
        }
        let repo = RepoName::parse("octo-org/hello-world").unwrap();
        assert_eq!((repo.owner(), repo.name()), ("octo-org", "hello-world"));
        assert_eq!(repo.to_string(), "octo-org/hello-world");
        for (bad, why) in [
            ("", IdError::RepoShape),
            ("hello-world", IdError::RepoShape),
            ("/hello", IdError::RepoOwner),
            ("octo_org/hello", IdError::RepoOwner),
            (&format!("{}/n", "o".repeat(40)), IdError::RepoOwner),
            ("octo/", IdError::RepoName),
            ("octo/.", IdError::RepoName),
            ("octo/..", IdError::RepoName),
            ("octo/a/b", IdError::RepoName),
            ("octo/hello world", IdError::RepoName),
            ("octo/héllo", IdError::RepoName),
            (&format!("o/{}", "n".repeat(101)), IdError::RepoName),
        ] {
            assert_eq!(RepoName::parse(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn environment_names_are_not_blank_short_and_printable() {
        for ok in ["production", "Staging EU", "prod/eu-1", &"é".repeat(255)] {
            assert_eq!(EnvName::parse(ok).unwrap(), ok);
        }
        assert_eq!(EnvName::parse(""), Err(IdError::EnvEmpty));
        assert_eq!(EnvName::parse(" \t "), Err(IdError::EnvEmpty));
        assert_eq!(EnvName::parse(&"e".repeat(256)), Err(IdError::EnvTooLong));
        assert_eq!(EnvName::parse("prod\nuction"), Err(IdError::EnvControl));
        assert_eq!(EnvName::parse("prod\u{7f}"), Err(IdError::EnvControl));
    }

    #[test]
    fn shas_are_hex_from_four_to_sixty_four_digits_and_stored_lowercase() {
        for ok in [SHA1, SHA256, "9f0c1e2", "abc123", "abcd"] {
            assert_eq!(Sha::parse(ok).unwrap(), ok);
        }
        let upper = Sha::parse(&SHA1.to_ascii_uppercase()).unwrap();
        assert_eq!(upper, SHA1);
        assert_eq!(
            Sha::parse("abc"),
            Err(IdError::ShaLength { len: 3 }),
            "too short to name a commit"
        );
        assert_eq!(Sha::parse(""), Err(IdError::ShaLength { len: 0 }));
        assert_eq!(
            Sha::parse(&format!("{SHA256}0")),
            Err(IdError::ShaLength { len: 65 })
        );
        assert_eq!(Sha::parse("main000"), Err(IdError::ShaDigits));
        assert_eq!(Sha::parse("0123456 "), Err(IdError::ShaDigits));
        assert_eq!(Sha::parse("0123456é"), Err(IdError::ShaDigits));
    }

    #[test]
    fn a_short_sha_is_its_first_seven_digits() {
        assert_eq!(Sha::parse(SHA1).unwrap().short(), "6113728");
        assert_eq!(Sha::parse("9f0c1e2").unwrap().short(), "9f0c1e2");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha(SHA1), "6113728");
    }

    #[test]
    fn new_deployment_ids_are_dep_and_a_uuid_v7_and_parse_back() {
        let id = DeploymentId::new();
        let uuid = id.as_str().strip_prefix("dep-").expect("dep- prefix");
        assert_eq!(uuid.len(), 32);
        let parsed = uuid::Uuid::parse_str(uuid).expect("uuid");
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(DeploymentId::parse(id.as_str()).unwrap(), id);
        assert_ne!(DeploymentId::new(), id);
        for bad in ["", "dep 1", "dep#1", "dep/1", &"d".repeat(101)] {
            assert_eq!(
                DeploymentId::parse(bad),
                Err(IdError::DeploymentId),
                "{bad:?}"
            );
        }
        assert!(DeploymentId::parse("dep-test").is_ok());
    }

    #[test]
    fn github_deployment_states_name_every_documented_state_and_keep_others() {
        for (text, state) in [
            ("error", GitHubDeploymentState::Error),
            ("failure", GitHubDeploymentState::Failure),
            ("inactive", GitHubDeploymentState::Inactive),
            ("in_progress", GitHubDeploymentState::InProgress),
            ("queued", GitHubDeploymentState::Queued),
            ("pending", GitHubDeploymentState::Pending),
            ("success", GitHubDeploymentState::Success),
            ("waiting", GitHubDeploymentState::Waiting),
            (
                "destroyed",
                GitHubDeploymentState::Other("destroyed".into()),
            ),
            ("SUCCESS", GitHubDeploymentState::Other("SUCCESS".into())),
        ] {
            assert_eq!(text.parse::<GitHubDeploymentState>().unwrap(), state);
            assert_eq!(state, text);
            assert_eq!(String::from(state), text);
        }
        assert!(GitHubDeploymentState::Error.is_failed());
        assert!(GitHubDeploymentState::Pending.is_started());
        assert!(GitHubDeploymentState::Success.is_final());
        assert!(!GitHubDeploymentState::Waiting.is_final());
    }

    #[test]
    fn serde_keeps_the_plain_string_wire_format() {
        let json = serde_json::json!({
            "repo": "octo-org/hello-world",
            "environment": "production",
            "sha": SHA1,
            "id": "dep-0190b5c1c2d37d6a9f0e1a2b3c4d5e6f",
            "state": "in_progress",
            "other": "destroyed",
        });
        #[derive(Debug, Serialize, Deserialize)]
        struct Wire {
            repo: RepoName,
            environment: EnvName,
            sha: Sha,
            id: DeploymentId,
            state: GitHubDeploymentState,
            other: GitHubDeploymentState,
        }
        let wire: Wire = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(wire.state, GitHubDeploymentState::InProgress);
        assert_eq!(serde_json::to_value(&wire).unwrap(), json);
        let text = serde_json::to_string(&wire.sha).unwrap();
        assert_eq!(text, format!("\"{SHA1}\""));
    }

    #[test]
    fn serde_refuses_what_parse_refuses_without_echoing_the_input() {
        let long = "x".repeat(10_000);
        let err = serde_json::from_value::<Sha>(serde_json::json!(long)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("hex digits"), "{message}");
        assert!(message.len() < 200, "{message}");
        assert!(serde_json::from_value::<RepoName>(serde_json::json!("nope")).is_err());
        assert!(serde_json::from_value::<EnvName>(serde_json::json!(" ")).is_err());
        assert!(serde_json::from_value::<DeploymentId>(serde_json::json!("a b")).is_err());
    }
}
