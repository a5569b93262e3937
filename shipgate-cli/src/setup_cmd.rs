//! `shipgate setup github-app --url BASE` and `shipgate setup slack-app --url BASE`: print the
//! checked-in app manifest (`manifests/github-app.json`, `manifests/slack-app.json`, embedded
//! at build time) with its `{{BASE_URL}}` placeholder replaced by shipgate's public base URL,
//! so the GitHub App's webhook is `BASE/webhooks/github` and the Slack app's interactivity
//! request URL is `BASE/webhooks/slack`.
//!
//! The manifest goes to stdout and nothing else does, so it can be redirected to a file or
//! piped; notes and the next step go to stderr. A URL that is not absolute, not https (plain
//! http is accepted for a loopback address only, with a note), or carries a query, fragment or
//! credentials is a usage error (exit 2).

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use reqwest::Url;
use shipgate_cli::error::CliError;

/// The GitHub App manifest, byte for byte as checked in.
const GITHUB_APP_MANIFEST: &str = include_str!("../../manifests/github-app.json");
/// The Slack app manifest, byte for byte as checked in.
const SLACK_APP_MANIFEST: &str = include_str!("../../manifests/slack-app.json");
/// What the manifests say where shipgate's base URL goes.
const BASE_URL_PLACEHOLDER: &str = "{{BASE_URL}}";

/// Which app's manifest to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    GitHub,
    Slack,
}

impl App {
    fn template(self) -> &'static str {
        match self {
            App::GitHub => GITHUB_APP_MANIFEST,
            App::Slack => SLACK_APP_MANIFEST,
        }
    }

    /// The route the app calls, under the base URL.
    fn route(self) -> &'static str {
        match self {
            App::GitHub => "/webhooks/github",
            App::Slack => "/webhooks/slack",
        }
    }

    fn next_step(self, base: &str) -> String {
        match self {
            App::GitHub => format!(
                "next: register the app from this manifest (README.md, \"GitHub App\"): post it as \
                 the form field `manifest` to https://github.com/organizations/ORG/settings/apps/new \
                 (a personal account: https://github.com/settings/apps/new); \
                 GitHub then sends your browser to {base}/healthz?code=…, and that code, exchanged \
                 within an hour, gives the App id, private key and webhook secret"
            ),
            App::Slack => "next: https://api.slack.com/apps → Create New App → From a manifest, \
                 pick the workspace and paste this manifest (README.md, \"Slack app\")"
                .to_owned(),
        }
    }
}

/// A checked base URL, and what the operator should know about it.
#[derive(Debug, PartialEq, Eq)]
struct BaseUrl {
    /// Absolute, without a trailing slash: `https://deploy.example.com` or `https://host/prefix`.
    url: String,
    notes: Vec<String>,
}

/// Prints `app`'s manifest for shipgate at `url`.
pub fn run(app: App, url: &str) -> Result<(), CliError> {
    let base = base_url(url)?;
    let manifest = fill(app.template(), &base.url)?;
    let mut out = std::io::stdout().lock();
    out.write_all(manifest.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)?;
    for note in &base.notes {
        eprintln!("note: {note}");
    }
    eprintln!("{}", app.next_step(&base.url));
    Ok(())
}

/// The manifest with every placeholder replaced by `base`, escaped as a JSON string's content.
fn fill(template: &str, base: &str) -> Result<String, CliError> {
    let quoted = serde_json::to_string(base)
        .map_err(|e| CliError::Usage(format!("--url cannot be written into JSON: {e}")))?;
    let escaped = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(&quoted);
    Ok(template.replace(BASE_URL_PLACEHOLDER, escaped))
}

fn usage(url: &str, why: &str) -> CliError {
    CliError::Usage(format!(
        "--url {url:?}: {why}; give shipgate's public base URL, e.g. https://deploy.example.com"
    ))
}

/// Checks `--url` and reduces it to a base URL. The stack's `GithubWebhookUrl` or
/// `SlackInteractivityUrl` output is accepted as it is: a trailing `/webhooks/github` or
/// `/webhooks/slack` is dropped (the manifest adds the route itself).
fn base_url(raw: &str) -> Result<BaseUrl, CliError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(usage(raw, "is empty"));
    }
    let url = Url::parse(trimmed).map_err(|e| usage(raw, &format!("not an absolute URL ({e})")))?;
    let mut notes = Vec::new();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => notes.push(format!(
            "{} is plain http on a loopback address: GitHub and Slack cannot reach it, so use it \
             only to try the manifest; register the app with the public https URL of the TLS proxy \
             in front of `shipgate serve`",
            url.origin().ascii_serialization()
        )),
        "http" => {
            return Err(usage(
                raw,
                "must be https (plain http is accepted for a loopback address only)",
            ))
        }
        other => return Err(usage(raw, &format!("scheme {other:?} is not https"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(usage(raw, "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(usage(raw, "must not carry a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage(
            raw,
            "must not carry a query (`?…`) or fragment (`#…`)",
        ));
    }
    let mut base = url.as_str().trim_end_matches('/').to_owned();
    for route in [App::GitHub.route(), App::Slack.route()] {
        if let Some(stripped) = base.strip_suffix(route) {
            notes.push(format!(
                "using the base URL {stripped}: the manifest adds `/webhooks/github` or \
                 `/webhooks/slack` itself"
            ));
            base = stripped.to_owned();
            break;
        }
    }
    Ok(BaseUrl { url: base, notes })
}

/// `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return ip.is_loopback();
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> BaseUrl {
        match base_url(raw) {
            Ok(base) => base,
            Err(e) => panic!("{raw:?} refused: {e}"),
        }
    }

    fn refused(raw: &str) -> String {
        match base_url(raw) {
            Ok(base) => panic!("{raw:?} accepted as {base:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn an_https_base_is_kept_without_its_trailing_slash() {
        assert_eq!(
            ok("https://deploy.example.com").url,
            "https://deploy.example.com"
        );
        assert_eq!(
            ok("https://deploy.example.com/").url,
            "https://deploy.example.com"
        );
        assert_eq!(
            ok(" https://Deploy.Example.com:8443/shipgate/ ").url,
            "https://deploy.example.com:8443/shipgate"
        );
        assert!(ok("https://deploy.example.com").notes.is_empty());
    }

    #[test]
    fn a_stack_output_is_reduced_to_its_base() {
        let base = ok("https://abc123.execute-api.eu-west-1.amazonaws.com/webhooks/github");
        assert_eq!(
            base.url,
            "https://abc123.execute-api.eu-west-1.amazonaws.com"
        );
        assert_eq!(base.notes.len(), 1, "{:?}", base.notes);
        let base = ok("https://abc123.execute-api.eu-west-1.amazonaws.com/webhooks/slack/");
        assert_eq!(
            base.url,
            "https://abc123.execute-api.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn plain_http_is_accepted_on_loopback_only_and_noted() {
        for loopback in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            let base = ok(loopback);
            assert_eq!(base.url, loopback);
            assert!(base.notes[0].contains("loopback"), "{:?}", base.notes);
        }
        assert!(refused("http://deploy.example.com").contains("must be https"));
        assert!(refused("http://10.0.0.1").contains("must be https"));
    }

    #[test]
    fn anything_but_an_absolute_https_base_is_a_usage_error() {
        assert!(refused("").contains("empty"));
        assert!(refused("deploy.example.com").contains("not an absolute URL"));
        assert!(refused("/webhooks/github").contains("not an absolute URL"));
        assert!(refused("ftp://deploy.example.com").contains("\"ftp\""));
        assert!(refused("https://deploy.example.com/?x=1").contains("query"));
        assert!(refused("https://deploy.example.com/#top").contains("fragment"));
        assert!(refused("https://ops:secret@deploy.example.com").contains("password"));
    }

    #[test]
    fn every_placeholder_is_filled_and_the_result_is_json() {
        for app in [App::GitHub, App::Slack] {
            assert!(app.template().contains(BASE_URL_PLACEHOLDER));
            let filled = match fill(app.template(), "https://deploy.example.com") {
                Ok(text) => text,
                Err(e) => panic!("{e}"),
            };
            assert!(!filled.contains(BASE_URL_PLACEHOLDER));
            assert!(filled.contains("https://deploy.example.com/webhooks/"));
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&filled) {
                panic!("{app:?} manifest is not JSON: {e}");
            }
        }
    }
}
