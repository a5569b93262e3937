//! Slack Block Kit rendering of shipgate's notifications: pure functions from a notification's
//! content to the `text` + `blocks` of a `chat.postMessage` / `chat.update`.
//!
//! A deployment has one message that is updated in place as it moves through its lifecycle,
//! so [`deployment_message`] renders the whole picture every time: what is deployed, by whom,
//! which policy checks passed, approvals so far, and the decision. While it awaits approval
//! the message carries Approve / Reject buttons; while it is verifying or has succeeded, a
//! Roll back button. While a manual rollback waits for its approvals
//! ([`deployment_message_with_rollback_request`]), the message shows the request and carries
//! Approve rollback / Cancel rollback buttons instead. A button's `value` is
//! `"{deployment_id}:{nonce}"` and nothing else: Slack echoes it back to whoever clicks, so it
//! must never carry a secret, and the nonce (the deployment's `button_nonce`, or the rollback
//! request's own) only lets the approval handler recognise a button from an older message.
//!
//! Everything that came from outside (refs, reasons, titles) is escaped for Slack's mrkdwn,
//! so a branch named `<!channel>` cannot ping a channel.

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::domain::deployment::{RollbackRequest, State};
use crate::domain::ids::short_sha;
use crate::notify::DeploymentSummary;

/// `action_id` of the Approve button.
pub const APPROVE_ACTION_ID: &str = "shipgate_approve";
/// `action_id` of the Reject button.
pub const REJECT_ACTION_ID: &str = "shipgate_reject";
/// `action_id` of the Roll back button.
pub const ROLLBACK_ACTION_ID: &str = "shipgate_rollback";
/// `action_id` of the Approve rollback button of an open rollback request.
pub const APPROVE_ROLLBACK_ACTION_ID: &str = "shipgate_rollback_approve";
/// `action_id` of the Cancel rollback button of an open rollback request.
pub const CANCEL_ROLLBACK_ACTION_ID: &str = "shipgate_rollback_cancel";

/// Where commits and repositories are linked to unless configured otherwise (GitHub
/// Enterprise Server has its own host).
pub const DEFAULT_GITHUB_WEB_URL: &str = "https://github.com";

/// Slack's limit for a header block's text.
const HEADER_MAX_CHARS: usize = 150;
/// Slack's limit for a section's text is 3000 characters; leave room for the surrounding words.
const SECTION_MAX_CHARS: usize = 2800;
/// Slack's limit for one section field.
const FIELD_MAX_CHARS: usize = 1900;

/// The `text` (notification and screen-reader fallback) and `blocks` of one Slack message.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackMessage {
    pub text: String,
    pub blocks: Value,
}

/// The value a deployment's buttons carry.
pub fn button_value(deployment_id: &str, nonce: &str) -> String {
    format!("{deployment_id}:{nonce}")
}

/// Splits a button value back into deployment id and nonce. Deployment ids never contain a
/// colon; the nonce is whatever follows the last one.
pub fn parse_button_value(value: &str) -> Option<(&str, &str)> {
    let (id, nonce) = value.rsplit_once(':')?;
    (!id.is_empty() && !nonce.is_empty()).then_some((id, nonce))
}

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` are control characters there (links,
/// mentions, `<!channel>`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The first `max` characters of `text`, with an ellipsis when something was cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

/// True for values that can sit inside a Slack `<url|label>` link without breaking out of it.
fn is_link_safe(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn is_safe_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '|'))
}

/// A mrkdwn link, or the escaped label when the URL could break the markup.
fn link(url: &str, label: &str) -> String {
    if is_safe_url(url) {
        format!("<{url}|{}>", escape(label))
    } else {
        escape(label)
    }
}

fn mention(slack_user: &str) -> String {
    if slack_user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        format!("<@{slack_user}>")
    } else {
        escape(slack_user)
    }
}

/// A Slack date token: rendered in each reader's time zone, RFC 3339 (UTC) as the fallback.
fn slack_date(at: Timestamp) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        at.as_second(),
        at
    )
}

fn plain(text: &str) -> Value {
    json!({ "type": "plain_text", "text": text, "emoji": true })
}

fn mrkdwn(text: &str) -> Value {
    json!({ "type": "mrkdwn", "text": text })
}

fn header(text: &str) -> Value {
    json!({ "type": "header", "text": plain(&truncate(text, HEADER_MAX_CHARS)) })
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": mrkdwn(text) })
}

fn context(text: &str) -> Value {
    json!({ "type": "context", "elements": [mrkdwn(text)] })
}

fn field(label: &str, value: &str) -> Value {
    mrkdwn(&format!("*{label}*\n{}", truncate(value, FIELD_MAX_CHARS)))
}

/// Emoji and label of a state, for headers and the fallback text.
fn state_label(state: State) -> (&'static str, &'static str) {
    match state {
        State::Requested => (":inbox_tray:", "Deployment requested"),
        State::Queued => (":busstop:", "Queued"),
        State::AwaitingApproval => (":hourglass_flowing_sand:", "Approval needed"),
        State::Approved => (":white_check_mark:", "Approved"),
        State::Rejected => (":no_entry:", "Rejected"),
        State::Expired => (":alarm_clock:", "Expired"),
        State::Deploying => (":rocket:", "Deploying"),
        State::Verifying => (":mag:", "Verifying"),
        State::Succeeded => (":tada:", "Deployed"),
        State::Failed => (":x:", "Failed"),
        State::RollingBack => (":rewind:", "Rolling back"),
        State::RolledBack => (":leftwards_arrow_with_hook:", "Rolled back"),
        State::Cancelled => (":heavy_minus_sign:", "Cancelled"),
    }
}

/// `"1 of 2"`.
pub fn approvals_progress(dep: &DeploymentSummary) -> String {
    format!("{} of {}", dep.approvals.len(), dep.approvals_required)
}

fn approvers(dep: &DeploymentSummary) -> String {
    dep.approvals
        .iter()
        .map(|a| mention(a))
        .collect::<Vec<_>>()
        .join(", ")
}

fn reason_or<'a>(dep: &'a DeploymentSummary, default: &'a str) -> String {
    escape(
        dep.reason
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or(default),
    )
}

/// One line saying how the deployment was decided or how it ended, if there is anything to say.
fn outcome_line(dep: &DeploymentSummary) -> Option<String> {
    let approved = if dep.approvals.is_empty() {
        "Approved automatically: the policy needs no approvals".to_owned()
    } else {
        format!("Approved by {}", approvers(dep))
    };
    let line = match dep.state {
        State::Requested => return None,
        State::Queued => match &dep.queue {
            Some(spot) if spot.position > 0 => format!(
                "{} in line behind deployment `{}`; waits until {}, then gives up",
                ordinal(spot.position),
                escape(&spot.behind),
                slack_date(spot.until)
            ),
            Some(spot) => format!(
                "Waiting behind deployment `{}`; waits until {}, then gives up",
                escape(&spot.behind),
                slack_date(spot.until)
            ),
            None => "Waiting for the deployment in progress to finish".to_owned(),
        },
        State::AwaitingApproval if dep.approvals.is_empty() => return None,
        State::AwaitingApproval => match dep.reason.as_deref().filter(|r| !r.trim().is_empty()) {
            // Complete but held: say by whom and what holds it.
            Some(held) => format!("Approved by {}; {}", approvers(dep), escape(held)),
            None => format!("Approved so far by {}", approvers(dep)),
        },
        State::Approved | State::Deploying | State::Verifying | State::Succeeded => approved,
        State::Rejected => format!("Rejected: {}", reason_or(dep, "no reason given")),
        State::Expired => format!(
            "Expired: {}",
            reason_or(dep, "no decision before the approval deadline")
        ),
        State::Failed => format!("Failed: {}", reason_or(dep, "the deployment failed")),
        State::Cancelled => format!("Cancelled: {}", reason_or(dep, "no reason given")),
        State::RollingBack | State::RolledBack => {
            let verb = if dep.state == State::RollingBack {
                "Rolling back"
            } else {
                "Rolled back"
            };
            let target = dep
                .rollback_target
                .as_deref()
                .map(|t| format!(" to `{}`", escape(short_sha(t))))
                .unwrap_or_default();
            match dep.reason.as_deref().filter(|r| !r.trim().is_empty()) {
                Some(reason) => format!("{verb}{target}: {}", escape(reason)),
                None => format!("{verb}{target}"),
            }
        }
    };
    Some(line)
}

/// `1st`, `2nd`, `3rd`, `11th`, `22nd`.
pub fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn button(action_id: &str, label: &str, style: &str, value: &str) -> Value {
    json!({
        "type": "button",
        "action_id": action_id,
        "text": plain(label),
        "style": style,
        "value": value,
    })
}

/// Who asked for a rollback, for people: a Slack mention, or the CLI user.
fn requester(requested_by: &str) -> String {
    match requested_by.split_once(':') {
        Some(("slack", user)) => mention(user),
        Some(("cli", user)) => format!("{} (CLI)", escape(user)),
        _ => escape(requested_by),
    }
}

/// "Rollback to `abc1234` requested by @x: 1 of 2 approvals (by @y), expires …".
fn rollback_request_line(request: &RollbackRequest) -> String {
    let by = if request.approvals.is_empty() {
        String::new()
    } else {
        let who = request
            .approvals
            .iter()
            .map(|a| mention(&a.approver))
            .collect::<Vec<_>>()
            .join(", ");
        format!(" (by {who})")
    };
    format!(
        ":leftwards_arrow_with_hook: *Rollback to `{}` requested* by {}: {} of {} approvals{by}, expires {}",
        escape(request.short_target()),
        requester(&request.requested_by),
        request.approval_count(),
        request.need(),
        slack_date(request.expires_at)
    )
}

fn rollback_request_buttons(dep: &DeploymentSummary, request: &RollbackRequest) -> Value {
    let value = button_value(&dep.id, &request.nonce);
    let mut approve = button(
        APPROVE_ROLLBACK_ACTION_ID,
        "Approve rollback",
        "danger",
        &value,
    );
    approve["confirm"] = json!({
        "title": plain(&truncate(&format!("Approve rolling back {} in {}?", dep.repo, dep.environment), 100)),
        "text": mrkdwn(&format!(
            "This approves replacing `{}` of *{}* in *{}* with `{}`.",
            escape(short_sha(&dep.sha)),
            escape(&dep.repo),
            escape(&dep.environment),
            escape(request.short_target())
        )),
        "confirm": plain("Approve rollback"),
        "deny": plain("Cancel"),
    });
    let mut cancel = button(
        CANCEL_ROLLBACK_ACTION_ID,
        "Cancel rollback",
        "primary",
        &value,
    );
    // A plain button: no style, so it does not compete with the decision.
    if let Some(obj) = cancel.as_object_mut() {
        obj.remove("style");
    }
    json!({
        "type": "actions",
        "block_id": "shipgate_rollback_request",
        "elements": [approve, cancel],
    })
}

fn buttons(dep: &DeploymentSummary, rollback_request: Option<&RollbackRequest>) -> Option<Value> {
    if let Some(request) = rollback_request.filter(|_| {
        matches!(
            dep.state,
            State::Verifying | State::Succeeded | State::Failed
        )
    }) {
        return Some(rollback_request_buttons(dep, request));
    }
    // Without a nonce the approval handler would refuse every click; show no buttons at all.
    let nonce = dep.button_nonce.as_deref()?;
    let value = button_value(&dep.id, nonce);
    match dep.state {
        State::AwaitingApproval => Some(json!({
            "type": "actions",
            "block_id": "shipgate_decision",
            "elements": [
                button(APPROVE_ACTION_ID, "Approve", "primary", &value),
                button(REJECT_ACTION_ID, "Reject", "danger", &value),
            ],
        })),
        State::Verifying | State::Succeeded => {
            let mut rollback = button(ROLLBACK_ACTION_ID, "Roll back", "danger", &value);
            rollback["confirm"] = json!({
                "title": plain(&truncate(&format!("Roll back {} in {}?", dep.repo, dep.environment), 100)),
                "text": mrkdwn(&format!(
                    "This replaces `{}` of *{}* in *{}* with the last known good version of {}.",
                    escape(short_sha(&dep.sha)),
                    escape(&dep.repo),
                    escape(&dep.environment),
                    escape(&dep.repo)
                )),
                "confirm": plain("Roll back"),
                "deny": plain("Cancel"),
            });
            Some(json!({
                "type": "actions",
                "block_id": "shipgate_rollback",
                "elements": [rollback],
            }))
        }
        _ => None,
    }
}

/// The message about one deployment, rendered in full from its current summary.
pub fn deployment_message(dep: &DeploymentSummary, github_web_url: &str) -> SlackMessage {
    deployment_message_with_rollback_request(dep, None, github_web_url)
}

/// [`deployment_message`], showing the deployment's open rollback request (its progress and
/// deadline, with Approve rollback / Cancel rollback buttons) when there is one.
pub fn deployment_message_with_rollback_request(
    dep: &DeploymentSummary,
    rollback_request: Option<&RollbackRequest>,
    github_web_url: &str,
) -> SlackMessage {
    // A request only means something while the deployment can still be rolled back by hand.
    let rollback_request = rollback_request.filter(|_| {
        matches!(
            dep.state,
            State::Verifying | State::Succeeded | State::Failed
        )
    });
    let web = github_web_url.trim_end_matches('/');
    let (emoji, label) = state_label(dep.state);

    let repo = if is_link_safe(&dep.repo) {
        link(&format!("{web}/{}", dep.repo), &dep.repo)
    } else {
        escape(&dep.repo)
    };
    let commit = if is_link_safe(&dep.repo) && is_link_safe(&dep.sha) {
        format!(
            "<{web}/{}/commit/{}|`{}`>",
            dep.repo,
            dep.sha,
            short_sha(&dep.sha)
        )
    } else {
        format!("`{}`", escape(short_sha(&dep.sha)))
    };
    let mut fields = vec![
        field("Repository", &repo),
        field("Environment", &escape(&dep.environment)),
        field("Ref", &format!("`{}`", escape(&dep.git_ref))),
        field("Commit", &commit),
        field("Requested by", &escape(&dep.requester)),
    ];
    if dep.approvals_required > 0 || !dep.approvals.is_empty() {
        fields.push(field("Approvals", &approvals_progress(dep)));
    }
    fields.push(field("State", &dep.state.as_str().replace('_', " ")));

    let mut blocks = vec![
        header(&format!(
            "{emoji} {label}: {} → {}",
            dep.repo, dep.environment
        )),
        json!({ "type": "section", "fields": fields }),
    ];
    if dep.break_glass {
        blocks.push(context(
            ":rotating_light: *Break-glass request*: outside the normal rules, so it needs an extra approval.",
        ));
    }
    if !dep.checks.is_empty() {
        let checks = dep
            .checks
            .iter()
            .map(|c| format!("• {}", escape(c)))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(section(&truncate(
            &format!("*Policy checks passed*\n{checks}"),
            SECTION_MAX_CHARS,
        )));
    }
    if !dep.analysis.is_empty() {
        let lines = dep
            .analysis
            .iter()
            .map(|c| format!("• {}", escape(c)))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(section(&truncate(
            &format!("*Analysis*\n{lines}"),
            SECTION_MAX_CHARS,
        )));
    }
    let outcome = outcome_line(dep);
    if let Some(line) = &outcome {
        blocks.push(section(&truncate(line, SECTION_MAX_CHARS)));
    }
    let request_line = rollback_request.map(rollback_request_line);
    if let Some(line) = &request_line {
        blocks.push(section(&truncate(line, SECTION_MAX_CHARS)));
    }
    if let Some(actions) = buttons(dep, rollback_request) {
        blocks.push(actions);
    }
    let mut footer = format!("Deployment `{}`", escape(&dep.id));
    match (dep.state, dep.approval_expires_at, dep.verify_until) {
        (State::AwaitingApproval, Some(at), _) => {
            footer.push_str(&format!(" · approval expires {}", slack_date(at)));
        }
        (State::Verifying, _, Some(at)) => {
            footer.push_str(&format!(" · verification window ends {}", slack_date(at)));
        }
        _ => {}
    }
    blocks.push(context(&footer));

    let mut text = format!(
        "{label}: {} `{}` ({}) to {}",
        escape(&dep.repo),
        escape(&dep.git_ref),
        escape(short_sha(&dep.sha)),
        escape(&dep.environment)
    );
    if dep.state == State::AwaitingApproval {
        text.push_str(&format!(" — {} approvals", approvals_progress(dep)));
    } else if let Some(request) = rollback_request {
        text.push_str(&format!(
            " — rollback to {} requested: {} of {} approvals",
            escape(request.short_target()),
            request.approval_count(),
            request.need()
        ));
    } else if let Some(line) = &outcome {
        text.push_str(" — ");
        text.push_str(line);
    }
    SlackMessage {
        text: truncate(&text, SECTION_MAX_CHARS),
        blocks: Value::Array(blocks),
    }
}

/// What an incident notification says, borrowed from the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentView<'a> {
    pub id: &'a str,
    pub environment: Option<&'a str>,
    /// The repository of a scoped incident.
    pub repository: Option<&'a str>,
    pub severity: &'a str,
    pub title: &'a str,
    pub status: &'a str,
    pub link: Option<&'a str>,
    pub deployment_id: Option<&'a str>,
    /// Why the incident is, or is not, attributed to a deployment.
    pub attribution: Option<&'a str>,
}

/// The message about an incident opening, firing again or resolving.
pub fn incident_message(incident: &IncidentView<'_>) -> SlackMessage {
    let resolved = incident.status == "resolved";
    let emoji = match (resolved, incident.severity) {
        (true, _) => ":white_check_mark:",
        (false, "critical") => ":rotating_light:",
        (false, "warning") => ":warning:",
        _ => ":information_source:",
    };
    let place = match (incident.repository, incident.environment) {
        (Some(r), Some(e)) => format!(" in {r} · {e}"),
        (None, Some(e)) => format!(" in {e}"),
        _ => String::new(),
    };
    let headline = if resolved {
        format!("Incident resolved{place}")
    } else {
        format!("{} incident{place}", capitalise(incident.severity))
    };

    let mut fields = vec![
        field("Severity", &escape(incident.severity)),
        field("Status", &escape(incident.status)),
        field(
            "Environment",
            &escape(incident.environment.unwrap_or("unknown")),
        ),
        field("Incident", &format!("`{}`", escape(incident.id))),
    ];
    if let Some(repo) = incident.repository {
        fields.push(field("Repository", &escape(repo)));
    }
    if let Some(dep) = incident.deployment_id {
        fields.push(field("Deployment", &format!("`{}`", escape(dep))));
    }
    let mut blocks = vec![
        header(&format!("{emoji} {headline}")),
        section(&truncate(
            &format!("*{}*", escape(incident.title)),
            SECTION_MAX_CHARS,
        )),
        json!({ "type": "section", "fields": fields }),
    ];
    if let Some(why) = incident.attribution.filter(|_| !resolved) {
        let blame = match incident.deployment_id {
            Some(dep) => format!("Attributed to `{}`: {}", escape(dep), escape(why)),
            None => format!("Not attributed to a deployment: {}", escape(why)),
        };
        blocks.push(context(&truncate(&blame, SECTION_MAX_CHARS)));
    }
    if let Some(url) = incident.link.filter(|u| is_safe_url(u)) {
        blocks.push(context(&link(url, "View the alert")));
    }
    let text = format!(
        "{headline} [{}]: {}",
        escape(incident.severity),
        escape(incident.title)
    );
    SlackMessage {
        text: truncate(&text, SECTION_MAX_CHARS),
        blocks: Value::Array(blocks),
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The summary message of one scheduled job run.
pub fn job_message(job: &str, ok: bool, summary: &str, details: &Value) -> SlackMessage {
    let (emoji, outcome) = if ok {
        (":white_check_mark:", "succeeded")
    } else {
        (":x:", "failed")
    };
    let mut blocks = vec![
        header(&format!("{emoji} {job} {outcome}")),
        section(&truncate(
            &if summary.trim().is_empty() {
                format!("The {} job {outcome}.", escape(job))
            } else {
                escape(summary)
            },
            SECTION_MAX_CHARS,
        )),
    ];
    let has_details = match details {
        Value::Null => false,
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    };
    if has_details {
        let pretty = serde_json::to_string_pretty(details).unwrap_or_else(|_| details.to_string());
        // Three backticks inside would end the code block early.
        let pretty = escape(&pretty).replace("```", "`\u{200b}``");
        blocks.push(section(&format!(
            "```{}```",
            truncate(&pretty, SECTION_MAX_CHARS - 6)
        )));
    }
    let text = format!("{} {outcome}: {}", escape(job), escape(summary));
    SlackMessage {
        text: truncate(&text, SECTION_MAX_CHARS),
        blocks: Value::Array(blocks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awaiting() -> DeploymentSummary {
        DeploymentSummary {
            id: "dep-01".into(),
            repo: "acme/shop".into(),
            environment: "production".into(),
            git_ref: "main".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            requester: "octocat".into(),
            state: State::AwaitingApproval,
            approvals: vec![],
            approvals_required: 2,
            checks: vec!["ref main is allowed".into(), "succeeded in staging".into()],
            reason: None,
            break_glass: false,
            rollback_target: None,
            button_nonce: Some("n0nce".into()),
            approval_expires_at: Some("2025-03-04T16:00:00Z".parse().expect("ts")),
            verify_until: None,
            queue: None,
            analysis: vec![],
        }
    }

    #[test]
    fn a_verifying_deployment_shows_each_analysis_check_and_its_last_value() {
        let mut dep = awaiting();
        dep.state = State::Verifying;
        dep.analysis = vec![
            "error-rate: 2 of 5 passed, 0 failed; last 0.0052 < 0.01: pass".into(),
            "p99: waiting for its first sample".into(),
        ];
        let message = deployment_message(&dep, "https://github.com");
        let text = message.blocks.to_string();
        assert!(
            text.contains("*Analysis*\\n• error-rate: 2 of 5 passed, 0 failed; last 0.0052 &lt; 0.01: pass\\n• p99: waiting for its first sample"),
            "{text}"
        );
        dep.analysis.clear();
        assert!(!deployment_message(&dep, "https://github.com")
            .blocks
            .to_string()
            .contains("Analysis"));
    }

    #[test]
    fn a_queued_deployment_says_where_it_stands_and_has_no_buttons() {
        let mut dep = awaiting();
        dep.state = State::Queued;
        dep.queue = Some(crate::notify::QueueSpot {
            position: 2,
            behind: "dep-ahead".into(),
            until: "2025-03-04T13:00:00Z".parse().expect("ts"),
        });
        let message = deployment_message(&dep, "https://github.com");
        let text = serde_json::to_string(&message.blocks).expect("json");
        assert!(text.contains("Queued: acme/shop"), "{text}");
        assert!(
            text.contains(
                "2nd in line behind deployment `dep-ahead`; waits until <!date^1741093200^"
            ),
            "{text}"
        );
        assert!(!text.contains("\"actions\""), "{text}");
        assert!(
            message.text.starts_with("Queued: acme/shop `main`"),
            "{}",
            message.text
        );
    }

    #[test]
    fn ordinals_read_as_english() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th"
            ]
        );
    }

    fn blocks_of(message: &SlackMessage) -> &Vec<Value> {
        message.blocks.as_array().expect("blocks are an array")
    }

    fn actions(message: &SlackMessage) -> Vec<Value> {
        blocks_of(message)
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn all_text(message: &SlackMessage) -> String {
        message.blocks.to_string()
    }

    #[test]
    fn approval_request_renders_the_whole_message_with_approve_and_reject_buttons() {
        let message = deployment_message(&awaiting(), DEFAULT_GITHUB_WEB_URL);
        let expected = json!([
            {"type": "header", "text": {"type": "plain_text", "emoji": true,
                "text": ":hourglass_flowing_sand: Approval needed: acme/shop → production"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Repository*\n<https://github.com/acme/shop|acme/shop>"},
                {"type": "mrkdwn", "text": "*Environment*\nproduction"},
                {"type": "mrkdwn", "text": "*Ref*\n`main`"},
                {"type": "mrkdwn", "text": "*Commit*\n<https://github.com/acme/shop/commit/0123456789abcdef0123456789abcdef01234567|`0123456`>"},
                {"type": "mrkdwn", "text": "*Requested by*\noctocat"},
                {"type": "mrkdwn", "text": "*Approvals*\n0 of 2"},
                {"type": "mrkdwn", "text": "*State*\nawaiting approval"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn",
                "text": "*Policy checks passed*\n• ref main is allowed\n• succeeded in staging"}},
            {"type": "actions", "block_id": "shipgate_decision", "elements": [
                {"type": "button", "action_id": "shipgate_approve", "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve", "emoji": true},
                 "value": "dep-01:n0nce"},
                {"type": "button", "action_id": "shipgate_reject", "style": "danger",
                 "text": {"type": "plain_text", "text": "Reject", "emoji": true},
                 "value": "dep-01:n0nce"},
            ]},
            {"type": "context", "elements": [{"type": "mrkdwn",
                "text": "Deployment `dep-01` · approval expires <!date^1741104000^{date_short_pretty} at {time}|2025-03-04T16:00:00Z>"}]},
        ]);
        assert_eq!(message.blocks, expected);
        assert_eq!(
            message.text,
            "Approval needed: acme/shop `main` (0123456) to production — 0 of 2 approvals"
        );
    }

    #[test]
    fn approval_progress_shows_the_count_and_who_approved_so_far() {
        let mut dep = awaiting();
        dep.approvals = vec!["U0APPROV1".into()];
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        let text = all_text(&message);
        assert!(text.contains("*Approvals*\\n1 of 2"), "{text}");
        assert!(text.contains("Approved so far by <@U0APPROV1>"), "{text}");
        assert_eq!(actions(&message).len(), 2);
        assert!(message.text.ends_with("— 1 of 2 approvals"));
    }

    #[test]
    fn approved_deployment_names_the_approvers_and_has_no_buttons() {
        let mut dep = awaiting();
        dep.state = State::Approved;
        dep.approvals = vec!["U0APPROV1".into(), "U0APPROV2".into()];
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        assert!(actions(&message).is_empty());
        let text = all_text(&message);
        assert!(
            text.contains("Approved by <@U0APPROV1>, <@U0APPROV2>"),
            "{text}"
        );
        assert!(!text.contains("approval expires"));
        assert_eq!(
            message.text,
            "Approved: acme/shop `main` (0123456) to production — Approved by <@U0APPROV1>, <@U0APPROV2>"
        );
    }

    #[test]
    fn rejected_and_expired_deployments_say_why() {
        let mut dep = awaiting();
        dep.state = State::Rejected;
        dep.reason = Some("outside the deploy window".into());
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        assert!(all_text(&message).contains("Rejected: outside the deploy window"));
        assert!(actions(&message).is_empty());

        dep.state = State::Expired;
        dep.reason = None;
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        assert!(all_text(&message).contains("Expired: no decision before the approval deadline"));
        assert!(message.text.starts_with("Expired: "));
    }

    #[test]
    fn verifying_and_succeeded_deployments_offer_a_confirmed_rollback_button() {
        for state in [State::Verifying, State::Succeeded] {
            let mut dep = awaiting();
            dep.state = state;
            dep.approvals = vec!["U0APPROV1".into(), "U0APPROV2".into()];
            dep.verify_until = Some("2025-03-04T17:15:00Z".parse().expect("ts"));
            let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
            let buttons = actions(&message);
            assert_eq!(buttons.len(), 1, "{state}");
            assert_eq!(buttons[0]["action_id"], ROLLBACK_ACTION_ID);
            assert_eq!(buttons[0]["value"], "dep-01:n0nce");
            assert_eq!(buttons[0]["style"], "danger");
            assert_eq!(buttons[0]["confirm"]["confirm"]["text"], "Roll back");
        }
    }

    #[test]
    fn finished_failed_and_rolled_back_deployments_have_no_buttons() {
        for state in [
            State::Failed,
            State::RollingBack,
            State::RolledBack,
            State::Deploying,
        ] {
            let mut dep = awaiting();
            dep.state = state;
            assert!(
                actions(&deployment_message(&dep, DEFAULT_GITHUB_WEB_URL)).is_empty(),
                "{state}"
            );
        }
    }

    #[test]
    fn rollback_line_names_the_target_and_the_reason() {
        let mut dep = awaiting();
        dep.state = State::RollingBack;
        dep.rollback_target = Some("fedcba9876543210".into());
        dep.reason = Some("critical alert HighErrorRate".into());
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        assert!(
            all_text(&message).contains("Rolling back to `fedcba9`: critical alert HighErrorRate")
        );
    }

    fn open_request() -> RollbackRequest {
        RollbackRequest {
            target_sha: "fedcba9876543210".into(),
            target_ref: "main".into(),
            requested_by: "slack:U0ALICE01".into(),
            requested_at: "2025-03-04T17:00:00Z".parse().expect("ts"),
            expires_at: "2025-03-04T18:00:00Z".parse().expect("ts"),
            approvals_required: 2,
            approvals: vec![crate::domain::deployment::Approval {
                approver: "U0BOB0002".into(),
                at: "2025-03-04T17:05:00Z".parse().expect("ts"),
            }],
            nonce: "rb-n0nce".into(),
        }
    }

    #[test]
    fn an_open_rollback_request_shows_its_progress_and_approve_and_cancel_buttons() {
        let mut dep = awaiting();
        dep.state = State::Succeeded;
        let request = open_request();
        let message =
            deployment_message_with_rollback_request(&dep, Some(&request), DEFAULT_GITHUB_WEB_URL);
        let text = all_text(&message);
        assert!(
            text.contains("*Rollback to `fedcba9` requested* by <@U0ALICE01>: 1 of 2 approvals (by <@U0BOB0002>), expires <!date^1741111200^"),
            "{text}"
        );
        let buttons = actions(&message);
        assert_eq!(buttons.len(), 2);
        assert_eq!(buttons[0]["action_id"], APPROVE_ROLLBACK_ACTION_ID);
        assert_eq!(buttons[0]["value"], "dep-01:rb-n0nce");
        assert_eq!(buttons[0]["confirm"]["confirm"]["text"], "Approve rollback");
        assert_eq!(buttons[1]["action_id"], CANCEL_ROLLBACK_ACTION_ID);
        assert_eq!(buttons[1]["value"], "dep-01:rb-n0nce");
        assert!(buttons[1].get("style").is_none());
        assert_eq!(
            message.text,
            "Deployed: acme/shop `main` (0123456) to production — rollback to fedcba9 requested: 1 of 2 approvals"
        );

        let mut from_cli = open_request();
        from_cli.requested_by = "cli:<!channel>".into();
        let text = all_text(&deployment_message_with_rollback_request(
            &dep,
            Some(&from_cli),
            DEFAULT_GITHUB_WEB_URL,
        ));
        assert!(text.contains("by &lt;!channel&gt; (CLI)"), "{text}");
    }

    #[test]
    fn a_rollback_request_is_not_shown_once_the_deployment_is_rolling_back() {
        let mut dep = awaiting();
        dep.state = State::RollingBack;
        let message = deployment_message_with_rollback_request(
            &dep,
            Some(&open_request()),
            DEFAULT_GITHUB_WEB_URL,
        );
        assert!(actions(&message).is_empty());
        assert!(!all_text(&message).contains("requested* by"));
    }

    #[test]
    fn no_buttons_without_a_nonce() {
        let mut dep = awaiting();
        dep.button_nonce = None;
        assert!(actions(&deployment_message(&dep, DEFAULT_GITHUB_WEB_URL)).is_empty());
    }

    #[test]
    fn github_web_url_is_configurable_for_enterprise_server() {
        let message = deployment_message(&awaiting(), "https://ghe.example.com/");
        let text = all_text(&message);
        assert!(text.contains("<https://ghe.example.com/acme/shop/commit/0123456789abcdef"));
        assert!(!text.contains("github.com"));
    }

    #[test]
    fn outside_text_is_escaped_so_it_cannot_mention_channels_or_forge_links() {
        let mut dep = awaiting();
        dep.git_ref = "<!channel> & <https://evil|x>".into();
        dep.state = State::Rejected;
        dep.reason = Some("<@U123> said no".into());
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        let text = all_text(&message);
        assert!(!text.contains("<!channel>"));
        assert!(!text.contains("<https://evil"));
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;https://evil|x&gt;"));
        assert!(text.contains("Rejected: &lt;@U123&gt; said no"));
        assert!(!message.text.contains("<!channel>"));
    }

    #[test]
    fn break_glass_requests_are_flagged() {
        let mut dep = awaiting();
        dep.break_glass = true;
        assert!(all_text(&deployment_message(&dep, DEFAULT_GITHUB_WEB_URL)).contains("Break-glass"));
    }

    #[test]
    fn button_values_round_trip_and_carry_only_id_and_nonce() {
        let value = button_value("dep-01", "n0nce");
        assert_eq!(value, "dep-01:n0nce");
        assert_eq!(parse_button_value(&value), Some(("dep-01", "n0nce")));
        assert_eq!(parse_button_value("dep-01"), None);
        assert_eq!(parse_button_value(":n"), None);
    }

    #[test]
    fn an_incident_of_one_repository_names_it() {
        let message = incident_message(&IncidentView {
            id: "alertmanager:abc123",
            environment: Some("production"),
            repository: Some("acme/api"),
            severity: "critical",
            title: "HighErrorRate on api",
            status: "open",
            link: None,
            deployment_id: Some("dep-01"),
            attribution: Some("began 2m 0s after 5a11ab1 went out, inside its verification window"),
        });
        assert_eq!(
            message.blocks[0]["text"]["text"],
            ":rotating_light: Critical incident in acme/api · production"
        );
        assert!(all_text(&message).contains("*Repository*\\nacme/api"));
        assert!(all_text(&message).contains(
            "Attributed to `dep-01`: began 2m 0s after 5a11ab1 went out, inside its verification window"
        ));
    }

    #[test]
    fn incident_message_shows_severity_environment_and_a_link_to_the_alert() {
        let message = incident_message(&IncidentView {
            id: "alertmanager:abc123",
            environment: Some("production"),
            repository: None,
            severity: "critical",
            title: "HighErrorRate on api",
            status: "open",
            link: Some("https://prometheus.example.com/graph?g0.expr=x"),
            deployment_id: Some("dep-01"),
            attribution: None,
        });
        assert_eq!(
            message.blocks[0]["text"]["text"],
            ":rotating_light: Critical incident in production"
        );
        let text = all_text(&message);
        assert!(text.contains("*HighErrorRate on api*"));
        assert!(text.contains("*Deployment*\\n`dep-01`"));
        assert!(text.contains("<https://prometheus.example.com/graph?g0.expr=x|View the alert>"));
        assert_eq!(
            message.text,
            "Critical incident in production [critical]: HighErrorRate on api"
        );

        let resolved = incident_message(&IncidentView {
            status: "resolved",
            link: Some("javascript:alert(1)"),
            ..IncidentView {
                id: "i",
                environment: None,
                repository: None,
                severity: "warning",
                title: "t",
                status: "",
                link: None,
                deployment_id: None,
                attribution: Some("no deployment was verifying"),
            }
        });
        assert_eq!(
            resolved.blocks[0]["text"]["text"],
            ":white_check_mark: Incident resolved"
        );
        assert!(!all_text(&resolved).contains("javascript"));
        assert!(
            !all_text(&resolved).contains("attributed"),
            "a resolution does not repeat the blame"
        );
    }

    #[test]
    fn job_message_summarises_and_shows_details_as_code() {
        let message = job_message(
            "backup",
            false,
            "backup of shipgate failed: KMS unavailable",
            &json!({"table": "shipgate"}),
        );
        assert_eq!(message.blocks[0]["text"]["text"], ":x: backup failed");
        assert_eq!(
            message.blocks[1]["text"]["text"],
            "backup of shipgate failed: KMS unavailable"
        );
        assert_eq!(
            message.blocks[2]["text"]["text"],
            "```{\n  \"table\": \"shipgate\"\n}```"
        );
        assert_eq!(
            message.text,
            "backup failed: backup of shipgate failed: KMS unavailable"
        );
        let ok = job_message("dora-report", true, "", &Value::Null);
        assert_eq!(ok.blocks.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn long_text_is_cut_within_slack_limits() {
        let mut dep = awaiting();
        dep.repo = "a".repeat(400);
        let message = deployment_message(&dep, DEFAULT_GITHUB_WEB_URL);
        let header = message.blocks[0]["text"]["text"].as_str().unwrap_or("");
        assert_eq!(header.chars().count(), HEADER_MAX_CHARS);
        assert!(header.ends_with('…'));
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }
}
