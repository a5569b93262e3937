//! Hostile interactivity bodies, kept as plain tests beside the `slack_form` and
//! `slack_payload` fuzz targets (fuzz/README.md): each must be refused with an `Err` (or, for
//! well-formed interactions that are not shipgate's, ignored), never a panic.

use slack_approval::interaction::{parse_form, parse_payload, split_value, Interaction};

fn form(payload: &str) -> Vec<u8> {
    serde_urlencoded::to_string([("payload", payload)])
        .expect("encodes")
        .into_bytes()
}

#[test]
fn malformed_form_bodies_are_refused() {
    for body in [
        &b""[..],
        b"&&&",
        b"=",
        b"payload",
        b"payload=",
        b"payload=%",
        b"payload=%ZZ",
        b"payload=%FF%FE",
        b"payload=null",
        b"payload=%7B%7D",
        b"\xff\xfe=1",
        b"payload=[]&command=/deploy",
    ] {
        assert!(
            parse_form(body).is_err(),
            "{:?} was accepted",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn malformed_payload_json_is_refused() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_state = format!(
        r#"{{"type":"view_submission","view":{{"state":{}1{}}}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    for json in [
        "",
        "{}",
        "[]",
        "null",
        r#"{"type":7}"#,
        r#"{"type":"block_actions"}"#,
        r#"{"type":"block_actions","actions":[]}"#,
        r#"{"type":"block_actions","actions":[{"action_id":"shipgate_approve"}]}"#,
        r#"{"type":"block_actions","user":{"id":""},"actions":[{"action_id":"shipgate_approve","value":"d:n","action_ts":"1"}]}"#,
        r#"{"type":"block_actions","user":{"id":"U1"},"actions":[{"action_id":"shipgate_approve","value":"d:n","action_ts":""}]}"#,
        r#"{"type":"view_submission"}"#,
        r#"{"type":"view_submission","user":{"id":"U1"},"view":{"id":"V","callback_id":"shipgate_reject_reason","private_metadata":":"}}"#,
        &deep,
        &deep_state,
    ] {
        assert!(
            parse_payload(json.as_bytes()).is_err(),
            "{json:?} was accepted"
        );
        assert!(
            parse_form(&form(json)).is_err(),
            "form of {json:?} was accepted"
        );
    }
}

#[test]
fn button_values_with_extra_or_missing_parts_are_refused() {
    for value in ["", ":", "::", "a:", ":b", "a:b:c", "a::b", "\u{0}"] {
        assert!(
            split_value(value, "value").is_err(),
            "{value:?} was accepted"
        );
    }
    let (id, nonce) = split_value("é:ü", "value").expect("non-ASCII parts are kept");
    assert_eq!((id.as_str(), nonce.as_str()), ("é", "ü"));
}

#[test]
fn a_reason_of_the_wrong_json_type_reads_as_blank() {
    for value in ["7", "null", "[]", "{}", "true"] {
        let json = format!(
            r#"{{"type":"view_submission","user":{{"id":"U1"}},"view":{{"id":"V","callback_id":"shipgate_reject_reason","private_metadata":"dep:n","state":{{"values":{{"shipgate_reason":{{"reason":{{"value":{value}}}}}}}}}}}}}"#
        );
        match parse_payload(json.as_bytes()) {
            Ok(Interaction::ReasonSubmitted(r)) => assert_eq!(r.reason, "", "{value}"),
            other => panic!("{value}: expected a reason submission, got {other:?}"),
        }
    }
}
