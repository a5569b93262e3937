//! The deployment state machine against a table written from DESIGN.md's lifecycle diagram
//! (plus the documented out-of-order, cancel and manual-rollback moves), independently of
//! `next_state`: every (state, action) pair is either in the table or refused with a typed
//! error that leaves the record unchanged. Also the approval rules, and a deterministic random
//! walk that must stay inside the table's reachable states.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use shipgate::domain::deployment::{
    next_state, Action, Actor, ApprovalOutcome, ApprovalRefused, ApproverFacts, Deployment, State,
    TransitionError,
};

use Action as A;
use State as S;

/// The legal moves. From DESIGN.md:
/// requested → rejected | approved | awaiting_approval; awaiting_approval → approved | expired |
/// rejected; approved → deploying → verifying → succeeded; deploying/verifying → failed on a
/// failure status; verifying → rolling_back on a critical alert; rolling_back → rolled_back.
/// Documented additions: a final status may overtake `in_progress` (approved → verifying,
/// approved → failed); a rollback's own failure fails it; the current version may be rolled
/// back by hand after its window (succeeded/failed → rolling_back); a run withdrawn before it
/// finished deploying is cancelled. The queue: a request whose scope is locked waits
/// (requested → queued) and leaves the queue decided as a fresh request is (approved,
/// awaiting_approval, rejected), or cancelled when its run is.
const LEGAL: &[(State, Action, State)] = &[
    (S::Requested, A::AutoApprove, S::Approved),
    (S::Requested, A::RequestApproval, S::AwaitingApproval),
    (S::Requested, A::Reject, S::Rejected),
    (S::Requested, A::Cancel, S::Cancelled),
    (S::Requested, A::Queue, S::Queued),
    (S::Queued, A::AutoApprove, S::Approved),
    (S::Queued, A::RequestApproval, S::AwaitingApproval),
    (S::Queued, A::Reject, S::Rejected),
    (S::Queued, A::Cancel, S::Cancelled),
    (S::AwaitingApproval, A::Approve, S::Approved),
    (S::AwaitingApproval, A::Reject, S::Rejected),
    (S::AwaitingApproval, A::Expire, S::Expired),
    (S::AwaitingApproval, A::Cancel, S::Cancelled),
    (S::Approved, A::StartDeploy, S::Deploying),
    (S::Approved, A::BeginVerification, S::Verifying),
    (S::Approved, A::Fail, S::Failed),
    (S::Approved, A::Cancel, S::Cancelled),
    (S::Deploying, A::BeginVerification, S::Verifying),
    (S::Deploying, A::Fail, S::Failed),
    (S::Deploying, A::Cancel, S::Cancelled),
    (S::Verifying, A::PassVerification, S::Succeeded),
    (S::Verifying, A::Fail, S::Failed),
    (S::Verifying, A::StartRollback, S::RollingBack),
    (S::Succeeded, A::StartRollback, S::RollingBack),
    (S::Failed, A::StartRollback, S::RollingBack),
    (S::RollingBack, A::FinishRollback, S::RolledBack),
    (S::RollingBack, A::Fail, S::Failed),
];

/// States in which a deployment is still in flight and so blocks its environment.
const LOCKING: &[State] = &[
    S::Requested,
    S::AwaitingApproval,
    S::Approved,
    S::Deploying,
    S::Verifying,
    S::RollingBack,
];

fn legal() -> BTreeMap<(State, &'static str), State> {
    let mut table = BTreeMap::new();
    for (from, action, to) in LEGAL {
        assert!(
            table.insert((*from, action.as_str()), *to).is_none(),
            "{from} {action} listed twice"
        );
    }
    table
}

fn t0() -> Timestamp {
    "2025-06-02T10:00:00Z".parse().unwrap()
}

/// A record in `state`, built through serde so fields added later with defaults need no
/// change here.
fn deployment(state: State) -> Deployment {
    let mut dep: Deployment = serde_json::from_value(serde_json::json!({
        "id": "dep-test",
        "repo": "octo-org/hello-world",
        "environment": "production",
        "git_ref": "main",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "requester": "octocat",
        "kind": "deploy",
        "state": state,
        "version": 3,
        "created_at": t0(),
        "updated_at": t0(),
        "run_id": 4242,
        "installation_id": 7,
        "approvals_required": 2,
        "approval_expires_at": t0() + jiff::SignedDuration::from_hours(4),
        "callback": "pending",
    }))
    .unwrap();
    dep.version = 3;
    dep
}

#[test]
fn every_state_and_action_pair_is_legal_exactly_as_the_table_says() {
    let table = legal();
    let later = t0() + jiff::SignedDuration::from_mins(5);
    let mut legal_seen = 0;
    for from in State::ALL {
        for action in Action::ALL {
            let mut dep = deployment(from);
            let before = dep.clone();
            let result = dep.apply(action, later, &Actor::system(), "test");
            match table.get(&(from, action.as_str())) {
                Some(to) => {
                    legal_seen += 1;
                    assert_eq!(next_state(from, action), Ok(*to), "{from} --{action}-->");
                    let event =
                        result.unwrap_or_else(|e| panic!("{from} --{action}--> refused: {e}"));
                    assert_eq!(dep.state, *to);
                    assert_eq!(dep.updated_at, later);
                    assert_eq!((event.from, event.to), (Some(from), Some(*to)));
                    assert_eq!(event.what, action.as_str());
                    assert_eq!(event.deployment_id, "dep-test");
                    assert_eq!(event.environment, "production");
                }
                None => {
                    let expected = TransitionError { from, action };
                    assert_eq!(
                        next_state(from, action),
                        Err(expected),
                        "{from} --{action}--> should be refused"
                    );
                    assert_eq!(result, Err(expected));
                    assert_eq!(
                        dep, before,
                        "a refused {action} from {from} changed the record"
                    );
                    assert_eq!(
                        expected.to_string(),
                        format!("cannot {action} a deployment that is {from}")
                    );
                }
            }
        }
    }
    assert_eq!(legal_seen, LEGAL.len());
}

#[test]
fn only_in_flight_states_hold_the_lock_and_terminal_states_have_no_way_out() {
    let table = legal();
    for state in State::ALL {
        let has_exit = table.keys().any(|(from, _)| *from == state);
        assert_eq!(state.is_terminal(), !has_exit, "{state}");
        assert_eq!(state.holds_lock(), LOCKING.contains(&state), "{state}");
        if state.is_terminal() {
            assert!(
                !state.holds_lock(),
                "terminal {state} would keep its environment locked forever"
            );
        }
    }
    let terminal: BTreeSet<State> = State::ALL.into_iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(
        terminal,
        BTreeSet::from([S::Rejected, S::Expired, S::RolledBack, S::Cancelled])
    );
}

#[test]
fn moves_stamp_deploy_start_and_finish_times_once() {
    let mut dep = deployment(S::Approved);
    let t1 = t0() + jiff::SignedDuration::from_mins(1);
    let t2 = t0() + jiff::SignedDuration::from_mins(2);
    dep.apply(A::StartDeploy, t1, &Actor::system(), "").unwrap();
    assert_eq!(dep.deploy_started_at, Some(t1));
    assert_eq!(dep.finished_at, None);
    dep.apply(A::Fail, t2, &Actor::system(), "").unwrap();
    assert_eq!(dep.finished_at, Some(t2));
    // A manual rollback after the failure keeps the original finish time.
    dep.apply(
        A::StartRollback,
        t2 + jiff::SignedDuration::from_mins(1),
        &Actor::system(),
        "",
    )
    .unwrap();
    assert_eq!(dep.finished_at, Some(t2));
}

// ---- approvals ----

const APPROVERS: &[&str] = &["U0APPROV1", "U0APPROV2", "U0APPROV3"];

fn approvers() -> Vec<String> {
    APPROVERS.iter().map(|s| s.to_string()).collect()
}

fn facts<'a>(approvers: &'a [String], clicker_login: Option<&'a str>) -> ApproverFacts<'a> {
    ApproverFacts {
        approvers,
        clicker_login,
        prevent_self_approval: true,
    }
}

fn awaiting(required: u32) -> Deployment {
    let mut dep = deployment(S::AwaitingApproval);
    dep.approvals_required = required;
    dep
}

#[test]
fn n_distinct_approvers_reach_the_quorum_and_approve() {
    let list = approvers();
    let mut dep = awaiting(2);
    let at = t0() + jiff::SignedDuration::from_mins(1);
    let (first, events) = dep
        .record_approval("U0APPROV1", &facts(&list, Some("alice-ops")), at)
        .unwrap();
    assert_eq!(first, ApprovalOutcome::Progress { have: 1, need: 2 });
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].what, "approval_recorded");
    assert_eq!(dep.state, S::AwaitingApproval);

    let (second, events) = dep
        .record_approval("U0APPROV2", &facts(&list, Some("bob-sre")), at)
        .unwrap();
    assert_eq!(
        second,
        ApprovalOutcome::QuorumReached {
            approvers: vec!["U0APPROV1".into(), "U0APPROV2".into()]
        }
    );
    assert_eq!(dep.state, S::Approved);
    assert_eq!(
        events.last().map(|e| (e.what.as_str(), e.to)),
        Some(("approve", Some(S::Approved)))
    );
    assert_eq!(events.last().unwrap().actor, "slack:U0APPROV2");
}

#[test]
fn the_same_person_approving_twice_counts_once() {
    let list = approvers();
    let mut dep = awaiting(2);
    dep.record_approval("U0APPROV1", &facts(&list, Some("alice-ops")), t0())
        .unwrap();
    let before = dep.clone();
    let again = dep.record_approval("U0APPROV1", &facts(&list, Some("alice-ops")), t0());
    assert_eq!(
        again,
        Err(ApprovalRefused::AlreadyApproved { have: 1, need: 2 })
    );
    assert_eq!(dep, before);
    assert_eq!(dep.approval_count(), 1);
}

#[test]
fn someone_not_on_the_approver_list_is_refused() {
    let list = approvers();
    let mut dep = awaiting(1);
    let before = dep.clone();
    let refused = dep.record_approval("U0STRANGER", &facts(&list, Some("mallory")), t0());
    assert_eq!(
        refused,
        Err(ApprovalRefused::NotAnApprover {
            environment: "production".into()
        })
    );
    assert_eq!(dep, before);
    let refused = dep.record_rejection("U0STRANGER", "no", &facts(&list, Some("mallory")), t0());
    assert_eq!(
        refused,
        Err(ApprovalRefused::NotAnApprover {
            environment: "production".into()
        })
    );
    assert_eq!(dep, before);
}

#[test]
fn the_requester_cannot_approve_their_own_deployment_whatever_the_login_case() {
    let list = approvers();
    for login in ["octocat", "OctoCat", "OCTOCAT"] {
        let mut dep = awaiting(1);
        let before = dep.clone();
        let refused = dep.record_approval("U0APPROV3", &facts(&list, Some(login)), t0());
        assert_eq!(refused, Err(ApprovalRefused::SelfApproval), "{login}");
        assert_eq!(dep, before);
    }
    // With the rule off, the same click counts.
    let mut dep = awaiting(1);
    let mut allowed = facts(&list, Some("octocat"));
    allowed.prevent_self_approval = false;
    assert!(matches!(
        dep.record_approval("U0APPROV3", &allowed, t0()),
        Ok((ApprovalOutcome::QuorumReached { .. }, _))
    ));
}

#[test]
fn an_expired_request_is_refused() {
    let list = approvers();
    let mut dep = awaiting(1);
    let expires = dep.approval_expires_at.unwrap();
    let before = dep.clone();
    assert_eq!(
        dep.record_approval("U0APPROV1", &facts(&list, Some("alice-ops")), expires),
        Err(ApprovalRefused::Expired {
            expired_at: expires
        })
    );
    assert_eq!(dep, before);
    // One second earlier it still counts.
    let ok = dep.record_approval(
        "U0APPROV1",
        &facts(&list, Some("alice-ops")),
        expires - jiff::SignedDuration::from_secs(1),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn a_decided_deployment_takes_no_more_clicks() {
    let list = approvers();
    for state in State::ALL.into_iter().filter(|s| *s != S::AwaitingApproval) {
        let mut dep = awaiting(1);
        dep.state = state;
        let before = dep.clone();
        assert_eq!(
            dep.record_approval("U0APPROV1", &facts(&list, Some("alice-ops")), t0()),
            Err(ApprovalRefused::AlreadyDecided { state })
        );
        assert_eq!(
            dep.record_rejection("U0APPROV1", "no", &facts(&list, Some("alice-ops")), t0()),
            Err(ApprovalRefused::AlreadyDecided { state })
        );
        assert_eq!(dep, before);
    }
}

#[test]
fn one_approver_can_reject_with_a_reason() {
    let list = approvers();
    let mut dep = awaiting(2);
    dep.record_approval("U0APPROV1", &facts(&list, Some("alice-ops")), t0())
        .unwrap();
    let event = dep
        .record_rejection(
            "U0APPROV2",
            "  error budget is spent  ",
            &facts(&list, Some("bob-sre")),
            t0(),
        )
        .unwrap();
    assert_eq!(dep.state, S::Rejected);
    assert_eq!(
        dep.reason.as_deref(),
        Some("rejected by U0APPROV2: error budget is spent")
    );
    assert_eq!(
        (event.what.as_str(), event.from, event.to),
        ("reject", Some(S::AwaitingApproval), Some(S::Rejected))
    );
    assert_eq!(event.actor, "slack:U0APPROV2");
    assert!(!dep.state.holds_lock());
}

#[test]
fn the_requester_cannot_reject_as_an_approver_either() {
    let list = approvers();
    let mut dep = awaiting(1);
    let before = dep.clone();
    assert_eq!(
        dep.record_rejection("U0APPROV1", "", &facts(&list, Some("octocat")), t0()),
        Err(ApprovalRefused::SelfApproval)
    );
    assert_eq!(dep, before);
}

// ---- property-style walk ----

/// xorshift64*: deterministic, so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn reachable_from_requested() -> BTreeSet<State> {
    let table = legal();
    let mut seen = BTreeSet::from([S::Requested]);
    let mut frontier = vec![S::Requested];
    while let Some(s) = frontier.pop() {
        for ((from, _), to) in &table {
            if *from == s && seen.insert(*to) {
                frontier.push(*to);
            }
        }
    }
    seen
}

#[test]
fn random_walks_from_requested_stay_inside_the_reachable_states() {
    let table = legal();
    let reachable = reachable_from_requested();
    // Every state is reachable from requested; the walk must also reach them all.
    assert_eq!(reachable, State::ALL.into_iter().collect());
    let mut visited = BTreeSet::new();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for walk in 0..500 {
        let mut dep = deployment(S::Requested);
        let mut now = t0();
        for step in 0..40 {
            now += jiff::SignedDuration::from_secs(1);
            let action = rng.pick(&Action::ALL);
            let before = dep.clone();
            match dep.apply(action, now, &Actor::system(), "walk") {
                Ok(event) => {
                    let expected = table.get(&(before.state, action.as_str()));
                    assert_eq!(
                        Some(&dep.state),
                        expected,
                        "walk {walk} step {step}: {} --{action}-->",
                        before.state
                    );
                    assert!(reachable.contains(&dep.state));
                    assert_eq!(event.from, Some(before.state));
                    // A queued request has not finished: it waits for its turn.
                    if dep.state == S::Queued {
                        assert!(dep.finished_at.is_none(), "walk {walk} step {step}");
                    } else if !dep.state.holds_lock() {
                        assert!(
                            dep.finished_at.is_some(),
                            "walk {walk} step {step}: {} has no finish time",
                            dep.state
                        );
                    }
                }
                Err(e) => {
                    assert_eq!(
                        e,
                        TransitionError {
                            from: before.state,
                            action
                        }
                    );
                    assert!(!table.contains_key(&(before.state, action.as_str())));
                    assert_eq!(dep, before);
                }
            }
            visited.insert(dep.state);
            if dep.state.is_terminal() {
                break;
            }
        }
    }
    assert_eq!(
        visited, reachable,
        "the walk should explore every reachable state"
    );
}
