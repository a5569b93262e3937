//! Typed configuration, read once at cold start from `SHIPGATE_` variables.
//!
//! Every secret can be given inline (`SHIPGATE_X`) or as a file (`SHIPGATE_X_FILE`, e.g. a
//! mounted secret); on AWS the function's start-up resolves Secrets Manager / SSM names into
//! these variables' values before calling the parsers here. A missing required secret is an
//! error at start-up — never a silent default — and error messages name the variable, never
//! its value.

use std::sync::Arc;

use secrecy::SecretString;

use crate::outbound::github::{GitHubApi, GitHubApp, GitHubAppConfig};
use crate::outbound::OutboundError;

/// Where variables come from: the process environment, or a map in tests.
pub trait Vars {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Vars for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<const N: usize> Vars for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("{var} is not valid: {reason}")]
    Invalid { var: String, reason: String },
    #[error("cannot read {var} from {path}: {source}")]
    File {
        var: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A non-empty plain variable.
pub fn optional(vars: &dyn Vars, name: &str) -> Option<String> {
    vars.var(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn required(vars: &dyn Vars, name: &str) -> Result<String, ConfigError> {
    optional(vars, name).ok_or_else(|| ConfigError::Missing(name.to_string()))
}

/// A secret from `NAME` or from the file named by `NAME_FILE`.
pub fn optional_secret(vars: &dyn Vars, name: &str) -> Result<Option<SecretString>, ConfigError> {
    if let Some(v) = vars.var(name).filter(|v| !v.is_empty()) {
        return Ok(Some(SecretString::from(v)));
    }
    let file_var = format!("{name}_FILE");
    match optional(vars, &file_var) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
                var: file_var.clone(),
                path: path.clone(),
                source,
            })?;
            // Files usually end with a newline that is not part of the secret.
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                return Err(ConfigError::Invalid {
                    var: file_var,
                    reason: "the file is empty".into(),
                });
            }
            Ok(Some(SecretString::from(text)))
        }
        None => Ok(None),
    }
}

pub fn required_secret(vars: &dyn Vars, name: &str) -> Result<SecretString, ConfigError> {
    optional_secret(vars, name)?
        .ok_or_else(|| ConfigError::Missing(format!("{name} (or {name}_FILE)")))
}

/// The fewest characters a secret that authenticates requests may have: the GitHub webhook
/// secret, the Slack signing secret (Slack's have 32) and the alert routes' bearer token.
pub const MIN_SECRET_CHARS: usize = 16;

/// Refuses a secret that authenticates inbound requests when it is blank after trimming or
/// shorter than [`MIN_SECRET_CHARS`]. The error names the variable, never the value.
pub fn strong_secret(name: &str, secret: SecretString) -> Result<SecretString, ConfigError> {
    use secrecy::ExposeSecret;
    let chars = secret.expose_secret().trim().chars().count();
    if chars == 0 {
        return Err(ConfigError::Invalid {
            var: name.into(),
            reason: "it is blank".into(),
        });
    }
    if chars < MIN_SECRET_CHARS {
        return Err(ConfigError::Invalid {
            var: name.into(),
            reason: format!(
                "it is shorter than {MIN_SECRET_CHARS} characters; use a long random value (e.g. `openssl rand -hex 32`)"
            ),
        });
    }
    Ok(secret)
}

/// [`optional_secret`] checked by [`strong_secret`].
pub fn optional_strong_secret(
    vars: &dyn Vars,
    name: &str,
) -> Result<Option<SecretString>, ConfigError> {
    optional_secret(vars, name)?
        .map(|s| strong_secret(name, s))
        .transpose()
}

/// [`required_secret`] checked by [`strong_secret`].
pub fn required_strong_secret(vars: &dyn Vars, name: &str) -> Result<SecretString, ConfigError> {
    strong_secret(name, required_secret(vars, name)?)
}

/// A Slack id (`T024BE7LD`): one of `first` letters, then capitals and digits.
fn slack_id(
    vars: &dyn Vars,
    name: &str,
    first: &[char],
    example: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = optional(vars, name) else {
        return Ok(None);
    };
    let mut chars = v.chars();
    let starts = chars.next().is_some_and(|c| first.contains(&c));
    let rest =
        chars.clone().count() >= 2 && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if starts && rest {
        Ok(Some(v))
    } else {
        let letters: Vec<String> = first.iter().map(char::to_string).collect();
        Err(ConfigError::Invalid {
            var: name.into(),
            reason: format!(
                "expected a Slack id starting with {} followed by capitals and digits, e.g. {example}",
                letters.join(" or ")
            ),
        })
    }
}

/// A base URL: absolute http(s), stored without a trailing slash.
pub fn base_url(vars: &dyn Vars, name: &str, default: &str) -> Result<String, ConfigError> {
    let v = optional(vars, name).unwrap_or_else(|| default.to_string());
    if !(v.starts_with("https://") || v.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            var: name.into(),
            reason: "must start with http:// or https://".into(),
        });
    }
    Ok(v.trim_end_matches('/').to_string())
}

pub fn parse_u64(vars: &dyn Vars, name: &str) -> Result<Option<u64>, ConfigError> {
    optional(vars, name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                var: name.into(),
                reason: "expected a positive integer".into(),
            })
        })
        .transpose()
}

/// GitHub: the webhook secret and the App credentials.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    pub webhook_secret: SecretString,
    /// The App; without it shipgate can record but not answer GitHub.
    pub app: GitHubAppSettings,
}

impl GitHubSettings {
    pub const WEBHOOK_SECRET: &'static str = "SHIPGATE_GITHUB_WEBHOOK_SECRET";
    pub const APP_ID: &'static str = "SHIPGATE_GITHUB_APP_ID";
    pub const PRIVATE_KEY: &'static str = "SHIPGATE_GITHUB_PRIVATE_KEY";
    pub const API_URL: &'static str = "SHIPGATE_GITHUB_API_URL";

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let webhook_secret = required_strong_secret(vars, Self::WEBHOOK_SECRET)?;
        Ok(GitHubSettings {
            webhook_secret,
            app: GitHubAppSettings::from_vars(vars)?,
        })
    }
}

/// The GitHub App alone, for functions that call GitHub but receive no GitHub webhooks
/// (Slack approvals, alert-driven rollbacks, scheduled jobs).
#[derive(Debug, Clone)]
pub struct GitHubAppSettings {
    /// App id and private key; both or neither.
    pub app: Option<(u64, SecretString)>,
    pub api_url: String,
}

impl GitHubAppSettings {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        const APP_ID: &str = GitHubSettings::APP_ID;
        const KEY: &str = GitHubSettings::PRIVATE_KEY;
        let app = match (parse_u64(vars, APP_ID)?, optional_secret(vars, KEY)?) {
            (Some(id), Some(key)) => Some((id, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing(format!("{KEY} (set with {APP_ID})")))
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing(format!("{APP_ID} (set with {KEY})")))
            }
        };
        Ok(GitHubAppSettings {
            app,
            api_url: base_url(vars, GitHubSettings::API_URL, "https://api.github.com")?,
        })
    }

    /// The GitHub App client, when the App is configured: the one place every entry point
    /// builds it (`SHIPGATE_GITHUB_API_URL` for GitHub Enterprise Server).
    pub fn client(
        &self,
        http: reqwest::Client,
    ) -> Result<Option<Arc<dyn GitHubApi>>, OutboundError> {
        let Some((app_id, key)) = &self.app else {
            return Ok(None);
        };
        let mut cfg = GitHubAppConfig::new(*app_id, key.clone());
        cfg.api_url = self.api_url.clone();
        Ok(Some(Arc::new(GitHubApp::new(cfg, http)?)))
    }
}

/// Slack: the signing secret for inbound clicks, the bot token for messages.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    pub signing_secret: Option<SecretString>,
    pub bot_token: Option<SecretString>,
    pub api_url: String,
    /// The workspace whose clicks count (`T…`; every click's `team.id`).
    pub team_id: Option<String>,
    /// The app clicks must be sent to (`A…`); unchecked when unset.
    pub app_id: Option<String>,
}

impl SlackSettings {
    pub const SIGNING_SECRET: &'static str = "SHIPGATE_SLACK_SIGNING_SECRET";
    pub const BOT_TOKEN: &'static str = "SHIPGATE_SLACK_BOT_TOKEN";
    pub const API_URL: &'static str = "SHIPGATE_SLACK_API_URL";
    pub const TEAM_ID: &'static str = "SHIPGATE_SLACK_TEAM_ID";
    pub const APP_ID: &'static str = "SHIPGATE_SLACK_APP_ID";

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        Ok(SlackSettings {
            signing_secret: optional_strong_secret(vars, Self::SIGNING_SECRET)?,
            bot_token: optional_secret(vars, Self::BOT_TOKEN)?,
            api_url: base_url(vars, Self::API_URL, "https://slack.com/api")?,
            team_id: slack_id(vars, Self::TEAM_ID, &['T'], "T024BE7LD")?,
            app_id: slack_id(vars, Self::APP_ID, &['A'], "A0KRD7HC3")?,
        })
    }

    /// The workspace id, required wherever Slack clicks are received: without it a click from
    /// any workspace the app is installed in (or a Slack Connect guest) would count.
    pub fn required_team_id(&self) -> Result<String, ConfigError> {
        self.team_id.clone().ok_or_else(|| {
            ConfigError::Missing(format!(
                "{}, the Slack workspace whose clicks count (T…; Slack shows it in the workspace's URL and in every click's team.id),",
                Self::TEAM_ID
            ))
        })
    }
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone)]
pub struct PagerDutySettings {
    pub routing_key: Option<SecretString>,
    pub url: String,
}

impl PagerDutySettings {
    pub const ROUTING_KEY: &'static str = "SHIPGATE_PAGERDUTY_ROUTING_KEY";
    pub const URL: &'static str = "SHIPGATE_PAGERDUTY_URL";

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        Ok(PagerDutySettings {
            routing_key: optional_secret(vars, Self::ROUTING_KEY)?,
            url: base_url(vars, Self::URL, "https://events.pagerduty.com/v2/enqueue")?,
        })
    }
}

/// The bearer token alert sources must present.
pub const ALERT_TOKEN: &str = "SHIPGATE_ALERT_TOKEN";
/// The GitHub web URL commits are linked to (GitHub Enterprise Server).
pub const GITHUB_WEB_URL_VAR: &str = "SHIPGATE_GITHUB_WEB_URL";
/// The Slack channel for job summaries and incidents without an environment.
pub const OPS_CHANNEL_VAR: &str = "SHIPGATE_SLACK_OPS_CHANNEL";

/// What the Slack approval function needs, checked at cold start: the signing secret that
/// verifies every click, the bot token that opens the reject-reason dialog, and the GitHub App
/// (optional: without it clicks are recorded but GitHub is not answered). It never receives
/// GitHub webhooks, so it needs no webhook secret.
#[derive(Debug, Clone)]
pub struct SlackApprovalSettings {
    pub signing_secret: SecretString,
    pub team_id: String,
    pub app_id: Option<String>,
    pub bot_token: SecretString,
    pub slack_api_url: String,
    pub github: GitHubAppSettings,
}

impl SlackApprovalSettings {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let slack = SlackSettings::from_vars(vars)?;
        // Checked after the secrets, so a missing secret is named first.
        let team_id = slack.required_team_id();
        let signing_secret = slack.signing_secret.ok_or_else(|| {
            ConfigError::Missing(format!(
                "{0} (or {0}_FILE), which verifies every Slack click,",
                SlackSettings::SIGNING_SECRET
            ))
        })?;
        let bot_token = slack.bot_token.ok_or_else(|| {
            ConfigError::Missing(format!(
                "{0} (or {0}_FILE), which opens the reject-reason dialog,",
                SlackSettings::BOT_TOKEN
            ))
        })?;
        Ok(SlackApprovalSettings {
            team_id: team_id?,
            app_id: slack.app_id,
            signing_secret,
            bot_token,
            slack_api_url: slack.api_url,
            github: GitHubAppSettings::from_vars(vars)?,
        })
    }
}

/// What the alert function needs: the bearer token alert sources present, and the GitHub App
/// that carries out rollbacks (optional: without it incidents are recorded, rollbacks not
/// carried out).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub token: SecretString,
    pub github: GitHubAppSettings,
}

impl AlertSettings {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        Ok(AlertSettings {
            token: required_strong_secret(vars, ALERT_TOKEN)?,
            github: GitHubAppSettings::from_vars(vars)?,
        })
    }
}

/// AWS: the DynamoDB table of shipgate's state.
pub const STATE_TABLE_VAR: &str = "SHIPGATE_TABLE";
/// AWS: the SNS topic notifications are published to.
pub const TOPIC_ARN_VAR: &str = "SHIPGATE_TOPIC_ARN";
/// AWS: the S3 bucket the backups go to.
pub const BACKUP_BUCKET_VAR: &str = "SHIPGATE_BACKUP_BUCKET";
/// AWS: the KMS key (id, ARN or alias) that wraps each backup's data key.
pub const KMS_KEY_VAR: &str = "SHIPGATE_KMS_KEY_ID";
/// AWS: prefix of the throw-away tables restore drills create; IAM scopes `CreateTable` and
/// `DeleteTable` to it. Defaults to `{SHIPGATE_TABLE}-scratch-`.
pub const SCRATCH_PREFIX_VAR: &str = "SHIPGATE_SCRATCH_TABLE_PREFIX";
/// The policy file.
pub const POLICY_FILE_VAR: &str = "SHIPGATE_POLICY_FILE";
/// The policy, inline.
pub const POLICY_VAR: &str = "SHIPGATE_POLICY";
/// AWS: the SSM parameter holding the policy.
pub const POLICY_PARAMETER_VAR: &str = "SHIPGATE_POLICY_PARAMETER";

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn github_settings_need_the_webhook_secret_and_name_it() {
        let err = GitHubSettings::from_vars(&[("SHIPGATE_GITHUB_APP_ID", "1")])
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("SHIPGATE_GITHUB_WEBHOOK_SECRET (or SHIPGATE_GITHUB_WEBHOOK_SECRET_FILE) is not set"));
    }

    #[test]
    fn github_app_id_without_a_key_is_refused() {
        let err = GitHubSettings::from_vars(&[
            (
                "SHIPGATE_GITHUB_WEBHOOK_SECRET",
                "a webhook secret long enough",
            ),
            ("SHIPGATE_GITHUB_APP_ID", "7"),
        ])
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("SHIPGATE_GITHUB_PRIVATE_KEY (set with SHIPGATE_GITHUB_APP_ID) is not set")
        );
    }

    #[test]
    fn secrets_can_come_from_files_without_their_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "a secret from a file\n").expect("write");
        let p = path.to_string_lossy().to_string();
        let vars = [("SHIPGATE_GITHUB_WEBHOOK_SECRET_FILE", p.as_str())];
        let s = GitHubSettings::from_vars(&vars).expect("settings");
        assert_eq!(s.webhook_secret.expose_secret(), "a secret from a file");
        assert_eq!(s.app.api_url, "https://api.github.com");
    }

    #[test]
    fn base_urls_must_be_http_and_lose_their_trailing_slash() {
        let ok = base_url(&[("U", "http://127.0.0.1:9/api/")], "U", "https://x").expect("url");
        assert_eq!(ok, "http://127.0.0.1:9/api");
        assert!(base_url(&[("U", "ftp://x")], "U", "https://x").is_err());
    }

    #[test]
    fn errors_never_contain_secret_values() {
        let vars = [
            ("SHIPGATE_GITHUB_WEBHOOK_SECRET", "hunter2hunter2hunter2"),
            ("SHIPGATE_GITHUB_API_URL", "nope"),
        ];
        let err = GitHubSettings::from_vars(&vars)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("SHIPGATE_GITHUB_API_URL") && !err.contains("hunter2"));
    }

    #[test]
    fn start_up_names_the_missing_signing_secret() {
        let err = SlackApprovalSettings::from_vars(&[("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-1")])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("SHIPGATE_SLACK_SIGNING_SECRET (or SHIPGATE_SLACK_SIGNING_SECRET_FILE), which verifies every Slack click, is not set")
        );
    }

    #[test]
    fn start_up_needs_no_github_webhook_secret_and_no_github_app() {
        let s = SlackApprovalSettings::from_vars(&[
            (
                "SHIPGATE_SLACK_SIGNING_SECRET",
                "8f742231b10e8888abcd99yyyzzz85a5",
            ),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-1"),
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM"),
        ])
        .unwrap();
        assert!(s.github.app.is_none());
        assert_eq!(s.github.api_url, "https://api.github.com");
        assert_eq!(s.slack_api_url, "https://slack.com/api");
    }

    #[test]
    fn a_github_app_id_without_its_key_is_refused_at_start_up() {
        let err = SlackApprovalSettings::from_vars(&[
            (
                "SHIPGATE_SLACK_SIGNING_SECRET",
                "8f742231b10e8888abcd99yyyzzz85a5",
            ),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-1"),
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM"),
            ("SHIPGATE_GITHUB_APP_ID", "12"),
        ])
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("SHIPGATE_GITHUB_PRIVATE_KEY (set with SHIPGATE_GITHUB_APP_ID) is not set")
        );
    }

    #[test]
    fn settings_debug_output_hides_secrets() {
        let s = SlackApprovalSettings::from_vars(&[
            ("SHIPGATE_SLACK_SIGNING_SECRET", "signing-hunter2-signing"),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-hunter2"),
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn blank_and_short_secrets_stop_start_up_naming_the_variable_not_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "   \t \n").expect("write");
        let file = path.to_string_lossy().to_string();
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("SHIPGATE_GITHUB_WEBHOOK_SECRET", "    ")],
                "SHIPGATE_GITHUB_WEBHOOK_SECRET is not valid: it is blank",
            ),
            (
                vec![("SHIPGATE_GITHUB_WEBHOOK_SECRET_FILE", file.as_str())],
                "SHIPGATE_GITHUB_WEBHOOK_SECRET is not valid: it is blank",
            ),
            (
                vec![("SHIPGATE_GITHUB_WEBHOOK_SECRET", "hunter2-short")],
                "SHIPGATE_GITHUB_WEBHOOK_SECRET is not valid: it is shorter than 16 characters; use a long random value (e.g. `openssl rand -hex 32`)",
            ),
        ];
        for (vars, want) in cases {
            let map: std::collections::HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let err = GitHubSettings::from_vars(&map).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want), "{vars:?}");
        }
        let err = AlertSettings::from_vars(&[("SHIPGATE_ALERT_TOKEN", "   token  ")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("SHIPGATE_ALERT_TOKEN is not valid: it is shorter than 16")
                && !err.contains("token "),
            "{err}"
        );
        let err = SlackApprovalSettings::from_vars(&[
            ("SHIPGATE_SLACK_SIGNING_SECRET", " \t "),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-1"),
        ])
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("SHIPGATE_SLACK_SIGNING_SECRET is not valid: it is blank")
        );
        assert!(AlertSettings::from_vars(&[("SHIPGATE_ALERT_TOKEN", "exactly-16-chars")]).is_ok());
    }

    #[test]
    fn slack_clicks_need_the_workspace_id_and_ids_are_checked() {
        let err = SlackApprovalSettings::from_vars(&[
            (
                "SHIPGATE_SLACK_SIGNING_SECRET",
                "8f742231b10e8888abcd99yyyzzz85a5",
            ),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-1"),
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("SHIPGATE_SLACK_TEAM_ID, the Slack workspace whose clicks count"),
            "{err}"
        );
        let err = SlackSettings::from_vars(&[("SHIPGATE_SLACK_TEAM_ID", "acme")])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("SHIPGATE_SLACK_TEAM_ID is not valid: expected a Slack id starting with T followed by capitals and digits, e.g. T024BE7LD")
        );
        let s = SlackSettings::from_vars(&[
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM1"),
            ("SHIPGATE_SLACK_APP_ID", "A0KRD7HC3"),
        ])
        .unwrap();
        assert_eq!(s.team_id.as_deref(), Some("T0TEAM1"));
        assert_eq!(s.app_id.as_deref(), Some("A0KRD7HC3"));
    }
}
