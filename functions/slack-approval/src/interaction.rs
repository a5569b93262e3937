//! Slack interactivity payloads, parsed into the few shapes shipgate acts on.
//!
//! Slack posts `application/x-www-form-urlencoded` with one field, `payload`, whose value is
//! the interaction as JSON. shipgate's buttons carry `action_id` `shipgate_approve`,
//! `shipgate_reject`, `shipgate_rollback`, or (on an open rollback request)
//! `shipgate_rollback_approve` / `shipgate_rollback_cancel`, and `value`
//! `"{deployment_id}:{nonce}"`; the
//! reject-reason dialog is a modal with callback id [`REASON_CALLBACK_ID`] whose
//! `private_metadata` carries the same `"{deployment_id}:{nonce}"`. Everything else Slack may
//! send is recognised as [`Interaction::Ignored`] rather than refused: Slack expects a 200
//! for every interaction it delivers.

use serde::Deserialize;

pub const ACTION_APPROVE: &str = "shipgate_approve";
pub const ACTION_REJECT: &str = "shipgate_reject";
pub const ACTION_ROLLBACK: &str = "shipgate_rollback";
pub const ACTION_APPROVE_ROLLBACK: &str = "shipgate_rollback_approve";
pub const ACTION_CANCEL_ROLLBACK: &str = "shipgate_rollback_cancel";

/// `callback_id` of the reject-reason modal.
pub const REASON_CALLBACK_ID: &str = "shipgate_reject_reason";
/// `block_id` of the reason input in that modal.
pub const REASON_BLOCK_ID: &str = "shipgate_reason";
/// `action_id` of the reason input in that modal.
pub const REASON_ACTION_ID: &str = "reason";

/// Which of shipgate's buttons was clicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    Approve,
    Reject,
    /// Roll back: opens a rollback request (or starts the rollback where no approvals are
    /// required).
    Rollback,
    /// Approve the open rollback request; its nonce is the request's.
    ApproveRollback,
    /// Withdraw the open rollback request; its nonce is the request's.
    CancelRollback,
}

impl ButtonAction {
    pub fn from_action_id(action_id: &str) -> Option<Self> {
        match action_id {
            ACTION_APPROVE => Some(ButtonAction::Approve),
            ACTION_REJECT => Some(ButtonAction::Reject),
            ACTION_ROLLBACK => Some(ButtonAction::Rollback),
            ACTION_APPROVE_ROLLBACK => Some(ButtonAction::ApproveRollback),
            ACTION_CANCEL_ROLLBACK => Some(ButtonAction::CancelRollback),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ButtonAction::Approve => "approve",
            ButtonAction::Reject => "reject",
            ButtonAction::Rollback => "rollback",
            ButtonAction::ApproveRollback => "approve_rollback",
            ButtonAction::CancelRollback => "cancel_rollback",
        }
    }
}

/// A click on one of shipgate's buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub action: ButtonAction,
    pub deployment_id: String,
    pub nonce: String,
    /// Slack user id of the clicker.
    pub user: String,
    pub origin: Origin,
    /// Slack's timestamp of this click; with the user and value it identifies the click, so
    /// Slack's retries of it are recognised.
    pub action_ts: String,
    /// The button's raw `value`.
    pub value: String,
    /// Lets shipgate open a modal for this click (valid for 3 s).
    pub trigger_id: Option<String>,
    /// Where to answer the clicker.
    pub response_url: Option<String>,
}

/// The reject-reason modal, submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonSubmission {
    pub origin: Origin,
    pub deployment_id: String,
    pub nonce: String,
    pub user: String,
    /// As typed (may be blank; the handler asks again then).
    pub reason: String,
    pub view_id: String,
    /// The raw `private_metadata`.
    pub metadata: String,
}

/// Where an interaction comes from, as its payload says: the workspace it happened in
/// (`team.id`), the clicker's own workspace (`user.team_id`; a Slack Connect guest's differs)
/// and the app it was sent to (`api_app_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub team_id: Option<String>,
    pub user_team_id: Option<String>,
    pub api_app_id: Option<String>,
}

/// What an interaction request asks of shipgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    Click(Click),
    ReasonSubmitted(ReasonSubmission),
    /// Authentic, but not something shipgate acts on (another app's action, a shortcut, a
    /// closed modal, a slash command...).
    Ignored {
        kind: String,
        detail: String,
    },
}

/// Why a request body is not a usable interaction.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("body is not form-encoded: {0}")]
    Form(#[source] serde_urlencoded::de::Error),
    #[error("form body has no `payload` field")]
    NoPayload,
    #[error("`payload` is not a valid interaction: {0}")]
    Json(#[source] serde_path_to_error::Error<serde_json::Error>),
    #[error("{kind} payload has no {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{field} must be \"{{deployment_id}}:{{nonce}}\"")]
    BadValue { field: &'static str },
}

#[derive(Deserialize)]
struct RawPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    team: Option<RawTeam>,
    #[serde(default)]
    api_app_id: Option<String>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<RawAction>,
    #[serde(default)]
    view: Option<RawView>,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(default)]
    id: String,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct RawTeam {
    #[serde(default)]
    id: Option<String>,
}

impl RawPayload {
    fn origin(&self) -> Origin {
        let some = |v: Option<&String>| v.filter(|v| !v.is_empty()).cloned();
        Origin {
            team_id: some(self.team.as_ref().and_then(|t| t.id.as_ref())),
            user_team_id: some(self.user.as_ref().and_then(|u| u.team_id.as_ref())),
            api_app_id: some(self.api_app_id.as_ref()),
        }
    }
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(default)]
    action_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    action_ts: Option<String>,
}

#[derive(Deserialize)]
struct RawView {
    #[serde(default)]
    id: String,
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    /// Kept loose: inputs of every kind live here and shipgate reads only its own.
    #[serde(default)]
    state: serde_json::Value,
}

/// Parses a form body as Slack sends it to the interactivity request URL.
pub fn parse_form(body: &[u8]) -> Result<Interaction, ParseError> {
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(ParseError::Form)?;
    let payload = fields.iter().find(|(k, _)| k == "payload").map(|(_, v)| v);
    match payload {
        Some(payload) => parse_payload(payload.as_bytes()),
        // Slash commands are signed the same way but are plain form fields; someone pointed
        // one at this URL. Nothing to do, and Slack wants its 200.
        None => match fields.iter().find(|(k, _)| k == "command") {
            Some((_, command)) => Ok(Interaction::Ignored {
                kind: "slash_command".into(),
                detail: command.clone(),
            }),
            None => Err(ParseError::NoPayload),
        },
    }
}

/// Splits `"{deployment_id}:{nonce}"`.
pub fn split_value(value: &str, field: &'static str) -> Result<(String, String), ParseError> {
    match value.split_once(':') {
        Some((id, nonce)) if !id.is_empty() && !nonce.is_empty() && !nonce.contains(':') => {
            Ok((id.to_string(), nonce.to_string()))
        }
        _ => Err(ParseError::BadValue { field }),
    }
}

/// Parses the JSON of a `payload` field.
pub fn parse_payload(json: &[u8]) -> Result<Interaction, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    let raw: RawPayload = serde_path_to_error::deserialize(de).map_err(ParseError::Json)?;
    match raw.kind.as_str() {
        "block_actions" => parse_block_actions(raw),
        "view_submission" => parse_view_submission(raw),
        _ => Ok(Interaction::Ignored {
            detail: String::new(),
            kind: raw.kind,
        }),
    }
}

fn user_id(user: Option<RawUser>, kind: &'static str) -> Result<String, ParseError> {
    user.map(|u| u.id)
        .filter(|id| !id.is_empty())
        .ok_or(ParseError::Missing {
            kind,
            field: "user.id",
        })
}

fn parse_block_actions(raw: RawPayload) -> Result<Interaction, ParseError> {
    const KIND: &str = "block_actions";
    let origin = raw.origin();
    let Some(first) = raw.actions.into_iter().next() else {
        return Err(ParseError::Missing {
            kind: KIND,
            field: "actions",
        });
    };
    let Some(action) = ButtonAction::from_action_id(&first.action_id) else {
        return Ok(Interaction::Ignored {
            kind: KIND.into(),
            detail: format!("action_id {:?}", first.action_id),
        });
    };
    let user = user_id(raw.user, KIND)?;
    let value = first.value.unwrap_or_default();
    let (deployment_id, nonce) = split_value(&value, "actions[0].value")?;
    let action_ts = first
        .action_ts
        .filter(|ts| !ts.is_empty())
        .ok_or(ParseError::Missing {
            kind: KIND,
            field: "actions[0].action_ts",
        })?;
    Ok(Interaction::Click(Click {
        origin,
        action,
        deployment_id,
        nonce,
        user,
        action_ts,
        value,
        trigger_id: raw.trigger_id.filter(|t| !t.is_empty()),
        response_url: raw.response_url.filter(|u| !u.is_empty()),
    }))
}

fn parse_view_submission(raw: RawPayload) -> Result<Interaction, ParseError> {
    const KIND: &str = "view_submission";
    let origin = raw.origin();
    let Some(view) = raw.view else {
        return Err(ParseError::Missing {
            kind: KIND,
            field: "view",
        });
    };
    if view.callback_id != REASON_CALLBACK_ID {
        return Ok(Interaction::Ignored {
            kind: KIND.into(),
            detail: format!("callback_id {:?}", view.callback_id),
        });
    }
    let user = user_id(raw.user, KIND)?;
    let (deployment_id, nonce) = split_value(&view.private_metadata, "view.private_metadata")?;
    let reason = view.state["values"][REASON_BLOCK_ID][REASON_ACTION_ID]["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Ok(Interaction::ReasonSubmitted(ReasonSubmission {
        origin,
        deployment_id,
        nonce,
        user,
        reason,
        view_id: view.id,
        metadata: view.private_metadata,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_button_value_splits_into_deployment_and_nonce() {
        let (id, nonce) = split_value("dep-1:abc", "v").unwrap();
        assert_eq!((id.as_str(), nonce.as_str()), ("dep-1", "abc"));
        for bad in ["", "dep-1", ":abc", "dep-1:", "a:b:c"] {
            assert!(split_value(bad, "v").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn action_ids_match_the_rendered_buttons() {
        use shipgate::render;
        for (id, action) in [
            (render::APPROVE_ACTION_ID, ButtonAction::Approve),
            (render::REJECT_ACTION_ID, ButtonAction::Reject),
            (render::ROLLBACK_ACTION_ID, ButtonAction::Rollback),
            (
                render::APPROVE_ROLLBACK_ACTION_ID,
                ButtonAction::ApproveRollback,
            ),
            (
                render::CANCEL_ROLLBACK_ACTION_ID,
                ButtonAction::CancelRollback,
            ),
        ] {
            assert_eq!(ButtonAction::from_action_id(id), Some(action), "{id}");
        }
        assert_eq!(ButtonAction::from_action_id("shipgate_other"), None);
    }

    #[test]
    fn other_interaction_types_are_ignored_not_refused() {
        let parsed = parse_payload(br#"{"type":"shortcut","user":{"id":"U1"}}"#).unwrap();
        assert_eq!(
            parsed,
            Interaction::Ignored {
                kind: "shortcut".into(),
                detail: String::new()
            }
        );
    }

    #[test]
    fn a_form_without_payload_is_malformed() {
        assert!(matches!(parse_form(b"x=1"), Err(ParseError::NoPayload)));
    }

    #[test]
    fn malformed_payload_json_names_the_field() {
        let err = parse_payload(br#"{"type":"block_actions","actions":[{"action_id":7}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("actions[0].action_id"), "{err}");
    }
}
