//! The read-only dashboard: what runs where, what waits for whom, what broke, backups, and
//! DORA's figures per week, as HTML pages.
//!
//! Each view reads what it shows from the store and renders a whole page ([`html::page`]);
//! nothing here writes. `shipgate serve` serves the pages live on their own listen address
//! (`shipgate-cli`'s `dashboard` module adds authentication); the `dora-report` job on AWS
//! writes the overview and DORA pages as files ([`html::Site::Static`]).
//!
//! Reads per page, whatever the number of deployments kept:
//! - overview: per scope (repository × environment), one query of the scope's partition (lock,
//!   heads, queue, open incidents) and the deployments it names (what runs, and the lock holder
//!   when that is another);
//! - a deployment: the deployment, its audit log, its analysis samples, and the incidents of
//!   its environment since it was requested;
//! - incidents and rollbacks: per environment, the incidents of the last 30 days and the
//!   newest [`RECENT_DEPLOYMENTS`] deployments;
//! - backups: the last result of each scheduled job;
//! - DORA: per environment, the kept weeks of the last quarter and the latest report.

pub mod auth;
pub mod chart;
pub mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use self::chart::{Series, Unit};
use self::html::{badge, esc, page, table, time, url_part, Nav, Site, Tone};
use crate::domain::deployment::{Deployment, State};
use crate::domain::dora::{human_duration, DoraReport};
use crate::domain::ids::{short_sha, EnvName};
use crate::domain::incident::{Incident, IncidentStatus, OpenIncident};
use crate::domain::job::JobReport;
use crate::domain::policy::Policy;
use crate::domain::scope::Scope;
use crate::store::{Repo, RepoError};

/// How many of an environment's newest deployments the rollbacks list looks through.
pub const RECENT_DEPLOYMENTS: usize = 500;
/// How far back the incidents page and the DORA charts look.
pub const INCIDENT_DAYS: i64 = 30;
pub const DORA_WEEKS: i64 = 13;

/// What every view needs.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub repo: &'a Repo,
    pub policy: &'a Policy,
    pub now: Timestamp,
    pub site: Site,
    /// Who is looking (a reverse proxy's authenticated user), shown in the header.
    pub signed_in: Option<&'a str>,
    /// GitHub's web address, for links to commits and runs.
    pub github_web: &'a str,
}

fn state_badge(state: State) -> String {
    let tone = match state {
        State::Succeeded => Tone::Ok,
        State::Failed | State::RolledBack | State::Rejected | State::Expired => Tone::Bad,
        State::RollingBack | State::AwaitingApproval | State::Queued => Tone::Warn,
        _ => Tone::Plain,
    };
    badge(state.as_str(), tone)
}

/// "production" beside an environment's name when DORA counts it as production and its
/// name does not already say so.
fn production_note(policy: &Policy, env: &str) -> &'static str {
    if policy.is_production(env) && !env.eq_ignore_ascii_case("production") {
        " <span class=\"muted\">(production)</span>"
    } else {
        ""
    }
}

/// An open incident in a line: its severity, title and since when.
fn open_incident(i: &OpenIncident) -> String {
    format!(
        "{} {} since {}",
        badge(i.severity.as_str(), Tone::Bad),
        esc(&i.title),
        time(i.opened_at)
    )
}

/// A titled table, or a line saying there is nothing to list.
fn listed(body: &mut String, title: &str, empty: &str, headers: &[&str], rows: &[Vec<String>]) {
    let _ = write!(body, "<h2>{}</h2>", esc(title));
    if rows.is_empty() {
        let _ = write!(body, "<p class=\"muted\">{}</p>", esc(empty));
    } else {
        body.push_str(&table(headers, rows));
    }
}

impl View<'_> {
    fn commit_link(&self, repo: &str, sha: &str) -> String {
        format!(
            "<a href=\"{}/{}/commit/{}\"><code>{}</code></a>",
            esc(self.github_web),
            esc(repo),
            esc(sha),
            esc(short_sha(sha))
        )
    }

    /// A Slack user id as the GitHub login `[identities]` maps it to, when it does.
    fn person(&self, slack_id: &str) -> String {
        match self.policy.slack_user_login(slack_id) {
            Some(login) => esc(login),
            None => format!("<code>{}</code>", esc(slack_id)),
        }
    }

    fn page(&self, nav: Nav, title: &str, body: &str) -> String {
        page(self.site, nav, title, self.signed_in, body)
    }

    /// The approvals of a deployment waiting for them: who approved, who still may, and
    /// when the request expires.
    fn approvals(&self, dep: &Deployment) -> String {
        let got: Vec<String> = dep
            .approvals
            .iter()
            .map(|a| self.person(&a.approver))
            .collect();
        let env = self.policy.environment(dep.environment.as_str());
        let requester_slack = self.policy.github_login_slack_id(&dep.requester);
        let may: Vec<String> = env
            .map(|e| {
                e.approvers
                    .iter()
                    .filter(|id| !dep.approvals.iter().any(|a| &a.approver == *id))
                    .filter(|id| !(e.prevent_self_approval && requester_slack == Some(id.as_str())))
                    .map(|id| self.person(id))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = format!(
            "{} of {} approvals",
            dep.approvals.len(),
            dep.approvals_required
        );
        if !got.is_empty() {
            let _ = write!(out, " (by {})", got.join(", "));
        }
        if !may.is_empty() {
            let _ = write!(out, "; may approve: {}", may.join(", "));
        }
        if let Some(expires) = dep.approval_expires_at {
            let _ = write!(out, "; expires {}", time(expires));
        }
        out
    }

    /// Every repository × environment: what runs, last known good, lock and queue, open
    /// incidents, pending approvals.
    pub async fn overview(&self) -> Result<String, RepoError> {
        let mut body = String::from("<h1>Overview</h1>");
        for env in self.policy.environment_names_production_first() {
            let Ok(env_name) = EnvName::parse(&env) else {
                continue;
            };
            let production = production_note(self.policy, &env);
            let _ = write!(body, "<h2>{}{production}</h2>", esc(&env));
            let env_open = self.repo.open_incidents(&env).await?;
            let env_level: Vec<_> = env_open.iter().filter(|i| i.repository.is_none()).collect();
            if !env_level.is_empty() {
                let list: Vec<String> = env_level.iter().copied().map(open_incident).collect();
                let _ = write!(
                    body,
                    "<p>Open for the whole environment: {}</p>",
                    list.join("; ")
                );
            }
            let repos = self.repo.repositories_in(&env).await?;
            if repos.is_empty() {
                body.push_str("<p class=\"muted\">Nothing deployed here yet.</p>");
                continue;
            }
            let mut rows = Vec::new();
            for repo in repos {
                let scope = Scope::new(repo.clone(), env_name.clone());
                // One query: the lock, the heads, the queue and the open incidents.
                let state = self.repo.scope_state(&scope).await?;
                let current = match &state.current {
                    Some(head) => self.repo.get_deployment(&head.deployment_id).await?,
                    None => None,
                };
                let runs = match &state.current {
                    Some(head) => {
                        // After a rollback the head names the rolled-back deployment and runs
                        // the sha it returned to.
                        let restored = current.as_ref().filter(|d| d.sha.as_str() != head.sha);
                        let dep = current.as_ref().filter(|d| d.sha.as_str() == head.sha);
                        let approved_by = dep
                            .map(|d| {
                                d.approvals
                                    .iter()
                                    .map(|a| self.person(&a.approver))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .filter(|s| !s.is_empty())
                            .map(|s| format!(", approved by {s}"))
                            .unwrap_or_default();
                        let status = match (dep, restored) {
                            (Some(d), _) => state_badge(d.state),
                            (None, Some(d)) => format!(
                                "{} of {}",
                                badge("restored by rollback", Tone::Warn),
                                self.commit_link(repo.as_str(), d.sha.as_str())
                            ),
                            (None, None) => String::new(),
                        };
                        format!(
                            "{} {status} <code>{}</code> since {}{approved_by}<br>{}",
                            self.commit_link(repo.as_str(), &head.sha),
                            esc(&head.git_ref),
                            time(head.at),
                            self.site.deployment_link(&head.deployment_id)
                        )
                    }
                    None => "<span class=\"muted\">nothing yet</span>".to_string(),
                };
                let good = match &state.last_known_good {
                    Some(head) => format!(
                        "{} since {}",
                        self.commit_link(repo.as_str(), &head.sha),
                        time(head.at)
                    ),
                    None => "<span class=\"muted\">none</span>".to_string(),
                };
                let lock = match &state.lock_holder {
                    Some(holder) => {
                        // The holder is often what runs now (verifying): read it once.
                        let dep = match &current {
                            Some(d) if d.id == *holder => Some(d.clone()),
                            _ => self.repo.get_deployment(holder).await?,
                        };
                        match dep {
                            Some(d) if d.state == State::AwaitingApproval => format!(
                                "{} {} {}<br>{}",
                                badge("awaiting approval", Tone::Warn),
                                self.commit_link(repo.as_str(), d.sha.as_str()),
                                self.site.deployment_link(&d.id),
                                self.approvals(&d)
                            ),
                            Some(d) => format!(
                                "locked by {} {}",
                                self.site.deployment_link(&d.id),
                                state_badge(d.state)
                            ),
                            None => format!("locked by <code>{}</code>", esc(holder)),
                        }
                    }
                    None => badge("free", Tone::Ok),
                };
                let queue = if state.queue.is_empty() {
                    "<span class=\"muted\">empty</span>".to_string()
                } else {
                    state
                        .queue
                        .iter()
                        .map(|q| {
                            format!(
                                "{} waiting since {}",
                                self.commit_link(repo.as_str(), q.sha.as_str()),
                                time(q.since)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let incidents = if state.open_incidents.is_empty() {
                    "<span class=\"muted\">none</span>".to_string()
                } else {
                    state
                        .open_incidents
                        .iter()
                        .map(open_incident)
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                rows.push(vec![
                    format!("<b>{}</b>", esc(repo.as_str())),
                    runs,
                    good,
                    lock,
                    queue,
                    incidents,
                ]);
            }
            body.push_str(&table(
                &[
                    "Repository",
                    "Runs now",
                    "Last known good",
                    "Lock / approvals",
                    "Queue",
                    "Open incidents",
                ],
                &rows,
            ));
        }
        Ok(self.page(Nav::Overview, "Overview", &body))
    }

    /// One deployment's page: its facts and its whole timeline. `None` when there is no such
    /// deployment.
    pub async fn deployment(&self, id: &str) -> Result<Option<String>, RepoError> {
        let Some(dep) = self.repo.get_deployment(id).await? else {
            return Ok(None);
        };
        let repo = dep.repo.as_str();
        let mut body = format!(
            "<h1>{} · {} {}</h1>",
            esc(repo),
            esc(dep.environment.as_str()),
            state_badge(dep.state)
        );
        let mut facts = vec![
            ("Deployment", format!("<code>{}</code>", esc(&dep.id))),
            ("Commit", self.commit_link(repo, dep.sha.as_str())),
            ("Ref", format!("<code>{}</code>", esc(&dep.git_ref))),
            ("Requested by", esc(&dep.requester)),
            ("Requested", time(dep.created_at)),
            ("Kind", esc(&format!("{:?}", dep.kind).to_lowercase())),
        ];
        if let Some(run) = dep.run_id {
            facts.push((
                "Workflow run",
                format!(
                    "<a href=\"{}/{}/actions/runs/{run}\">{run}</a>",
                    esc(self.github_web),
                    esc(repo)
                ),
            ));
        }
        if dep.approvals_required > 0 {
            facts.push(("Approvals", self.approvals(&dep)));
        }
        if let Some(until) = dep.verify_until {
            facts.push(("Verification window until", time(until)));
        }
        if let Some(rb) = &dep.rollback {
            facts.push((
                "Rollback",
                format!(
                    "to {} by {}: {}",
                    self.commit_link(repo, &rb.target_sha),
                    esc(&rb.started_by),
                    esc(&rb.reason)
                ),
            ));
        }
        body.push_str("<div class=\"scroll\"><table>");
        for (k, v) in &facts {
            let _ = write!(body, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
        }
        body.push_str("</table></div>");

        // The timeline: the audit log, analysis samples and the incidents attributed to it,
        // in time order.
        let mut events: Vec<(Timestamp, String)> = Vec::new();
        for e in self.repo.audit_for_deployment(&dep.id).await? {
            let moved = match (e.from, e.to) {
                (Some(from), Some(to)) if from != to => {
                    format!(" {} → {}", state_badge(from), state_badge(to))
                }
                _ => String::new(),
            };
            let why = if e.why.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&e.why))
            };
            events.push((
                e.at,
                format!(
                    "<b>{}</b>{moved} <span class=\"muted\">by {}</span>{why}",
                    esc(&e.what),
                    esc(&e.actor)
                ),
            ));
        }
        for s in self.repo.samples(&dep.id).await? {
            let verdict = match &s.judgement {
                crate::domain::analysis::Judgement::Pass => badge("pass", Tone::Ok),
                crate::domain::analysis::Judgement::Fail => badge("fail", Tone::Bad),
                crate::domain::analysis::Judgement::Inconclusive { reason } => {
                    format!("{} {}", badge("inconclusive", Tone::Warn), esc(reason))
                }
            };
            let value = s
                .value
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "–".into());
            events.push((
                s.at,
                format!(
                    "<b>analysis</b> {} #{}: {} {} {verdict}",
                    esc(&s.check),
                    s.slot,
                    esc(&value),
                    esc(&s.condition)
                ),
            ));
        }
        for inc in self
            .repo
            .incidents_in(dep.environment.as_str(), dep.created_at, Timestamp::MAX)
            .await?
        {
            for ep in inc.all_episodes() {
                if ep.caused_by_deployment.as_deref() != Some(dep.id.as_str()) {
                    continue;
                }
                let why = ep.attribution.as_deref().unwrap_or_default();
                events.push((
                    ep.began_at,
                    format!(
                        "<b>incident</b> {} {}: {}",
                        badge(inc.severity.as_str(), Tone::Bad),
                        esc(&inc.title),
                        esc(why)
                    ),
                ));
                if let Some(resolved) = ep.resolved_at {
                    events.push((
                        resolved,
                        format!("<b>incident resolved</b> {}", esc(&inc.title)),
                    ));
                }
            }
        }
        events.sort_by_key(|(at, _)| *at);
        body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
        for (at, text) in &events {
            let _ = write!(body, "<li>{} {text}</li>", time(*at));
        }
        body.push_str("</ol>");
        let title = format!("{} {}", repo, short_sha(dep.sha.as_str()));
        Ok(Some(self.page(Nav::Deployment, &title, &body)))
    }

    /// Incidents (every episode) and rollbacks of the last [`INCIDENT_DAYS`] days.
    pub async fn incidents(&self) -> Result<String, RepoError> {
        let from = self
            .now
            .checked_sub(SignedDuration::from_hours(24 * INCIDENT_DAYS))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let mut body = format!("<h1>Incidents and rollbacks, last {INCIDENT_DAYS} days</h1>");
        let mut incidents: Vec<Incident> = Vec::new();
        for env in self.policy.environment_names_production_first() {
            incidents.extend(self.repo.incidents_in(&env, from, Timestamp::MAX).await?);
        }
        incidents.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
        let mut rows = Vec::new();
        for inc in &incidents {
            let episodes = inc.all_episodes();
            for (n, ep) in episodes.iter().enumerate().rev() {
                let status = match (inc.status, ep.resolved_at) {
                    (_, Some(_)) => badge("resolved", Tone::Ok),
                    (IncidentStatus::Open, None) => badge("open", Tone::Bad),
                    (IncidentStatus::Resolved, None) => badge("resolved", Tone::Ok),
                };
                let blame = match &ep.caused_by_deployment {
                    Some(d) => self.site.deployment_link(d),
                    None => "<span class=\"muted\">none</span>".to_string(),
                };
                rows.push(vec![
                    format!(
                        "{}{}",
                        esc(inc.alert()),
                        if episodes.len() > 1 {
                            format!(
                                " <span class=\"muted\">(episode {} of {})</span>",
                                n + 1,
                                episodes.len()
                            )
                        } else {
                            String::new()
                        }
                    ),
                    esc(inc.environment.as_deref().unwrap_or("-")),
                    esc(inc.repository.as_ref().map_or("-", |r| r.as_str())),
                    badge(inc.severity.as_str(), Tone::Plain),
                    status,
                    time(ep.began_at),
                    ep.time_to_restore()
                        .map(|d| human_duration(d.as_secs_f64()))
                        .unwrap_or_else(|| "–".into()),
                    format!(
                        "{blame}<br><span class=\"muted\">{}</span>",
                        esc(ep.attribution.as_deref().unwrap_or_default())
                    ),
                ]);
            }
        }
        listed(
            &mut body,
            "Incidents",
            "No incidents.",
            &[
                "Alert",
                "Environment",
                "Repository",
                "Severity",
                "Status",
                "Began",
                "Time to restore",
                "Attributed to",
            ],
            &rows,
        );

        let mut rollbacks = Vec::new();
        for env in self.policy.environment_names_production_first() {
            for dep in self
                .repo
                .deployments_in(&env, from, self.now, true, Some(RECENT_DEPLOYMENTS))
                .await?
            {
                if let Some(rb) = &dep.rollback {
                    rollbacks.push((rb.started_at, dep.clone(), rb.clone()));
                }
            }
        }
        rollbacks.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
        let rows: Vec<Vec<String>> = rollbacks
            .iter()
            .map(|(_, dep, rb)| {
                vec![
                    self.site.deployment_link(&dep.id),
                    format!(
                        "{} · {}",
                        esc(dep.repo.as_str()),
                        esc(dep.environment.as_str())
                    ),
                    format!(
                        "{} → {}",
                        self.commit_link(dep.repo.as_str(), dep.sha.as_str()),
                        self.commit_link(dep.repo.as_str(), &rb.target_sha)
                    ),
                    state_badge(dep.state),
                    esc(&rb.started_by),
                    time(rb.started_at),
                    rb.finished_at
                        .map(|f| human_duration(f.duration_since(rb.started_at).as_secs_f64()))
                        .unwrap_or_else(|| "–".into()),
                    esc(&rb.reason),
                ]
            })
            .collect();
        listed(
            &mut body,
            "Rollbacks",
            "No rollbacks.",
            &[
                "Deployment",
                "Scope",
                "From → to",
                "State",
                "Started by",
                "Started",
                "Time to restore",
                "Why",
            ],
            &rows,
        );
        Ok(self.page(Nav::Incidents, "Incidents and rollbacks", &body))
    }

    /// The last backup, the last restore and rollback drills, with their RPO and RTO.
    pub async fn backups(&self) -> Result<String, RepoError> {
        let mut body = String::from("<h1>Backups and drills</h1><div class=\"cards\">");
        for (job, title) in [
            ("backup", "Last backup"),
            ("restore-drill", "Last restore drill"),
            ("rollback-drill", "Last rollback drill"),
        ] {
            let report: Option<JobReport> = self.repo.get_meta("job", job).await?;
            let _ = write!(
                body,
                "<div class=\"card\" data-job=\"{job}\"><h3>{title}</h3>"
            );
            match report {
                Some(r) => {
                    let _ = write!(
                        body,
                        "<p>{} {}</p><p>{}</p>",
                        if r.ok {
                            badge("ok", Tone::Ok)
                        } else {
                            badge("failed", Tone::Bad)
                        },
                        time(r.finished_at),
                        esc(&r.summary)
                    );
                    let ago = self.now.duration_since(r.finished_at).as_secs_f64();
                    let _ = write!(
                        body,
                        "<p class=\"muted\">{} ago</p>",
                        esc(&human_duration(ago))
                    );
                }
                None => body.push_str("<p class=\"muted\">Not run yet.</p>"),
            }
            body.push_str("</div>");
        }
        body.push_str("</div>");
        Ok(self.page(Nav::Backups, "Backups", &body))
    }

    /// DORA's figures per week over the last quarter, per environment (production first):
    /// the environment's roll-up, or one repository's (`only`).
    pub async fn dora(&self, only: Option<&str>) -> Result<String, RepoError> {
        let today = self.now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let from = today
            .checked_sub(jiff::Span::new().days(7 * DORA_WEEKS))
            .unwrap_or(today);
        let mut body = String::from("<h1>DORA</h1>");
        let _ = write!(
            body,
            "<p class=\"muted\">Each calendar week's own figures (weeks start on Sunday, UTC; the last is the week so far), as the daily <code>dora-report</code> kept them{}. Definitions: docs/dora.md.</p>",
            match only {
                Some(r) => format!(", for {}", esc(r)),
                None => ", rolled up over every repository".to_string(),
            }
        );
        for env in self.policy.environment_names_production_first() {
            let weeks = self.repo.dora_weeks(&env, from).await?;
            let mut series: BTreeMap<String, DoraReport> = BTreeMap::new();
            let mut repos: Vec<String> = Vec::new();
            for week in &weeks {
                for r in &week.reports {
                    if let Some(name) = &r.repo {
                        if !repos.contains(name) {
                            repos.push(name.clone());
                        }
                    }
                    let ours = match only {
                        Some(o) => r.repo.as_deref() == Some(o),
                        None => r.repo.is_none(),
                    };
                    if ours {
                        series.insert(week.day.to_string(), r.clone());
                    }
                }
            }
            let production = production_note(self.policy, &env);
            let _ = write!(
                body,
                "<section data-environment=\"{}\"><h2>{}{production}</h2>",
                esc(&env),
                esc(&env)
            );
            if self.site == Site::Live && !repos.is_empty() {
                let mut links = vec![format!("<a href=\"/dora\">all repositories</a>")];
                for r in &repos {
                    links.push(format!(
                        "<a href=\"/dora?repo={}\">{}</a>",
                        url_part(r),
                        esc(r)
                    ));
                }
                let _ = write!(body, "<p>{}</p>", links.join(" · "));
            }
            if series.is_empty() {
                body.push_str(
                    "<p class=\"muted\">No figures kept yet for this scope.</p></section>",
                );
                continue;
            }
            let points = |f: &dyn Fn(&DoraReport) -> Option<f64>| -> Vec<(String, Option<f64>)> {
                series.iter().map(|(w, r)| (w.clone(), f(r))).collect()
            };
            let one = |name: &str, f: &dyn Fn(&DoraReport) -> Option<f64>| Series {
                name: name.to_string(),
                points: points(f),
            };
            body.push_str("<div class=\"cards charts\">");
            let charts = [
                (
                    "Deployments per week",
                    chart::chart(
                        "deployments",
                        "Deployments per week",
                        Unit::Count,
                        true,
                        &[one("deployments", &|r| Some(f64::from(r.deployments)))],
                    ),
                ),
                (
                    "Change lead time (median)",
                    chart::chart(
                        "lead_time_seconds",
                        "Change lead time",
                        Unit::Seconds,
                        false,
                        &[one("lead time", &|r| r.lead_time_seconds)],
                    ),
                ),
                (
                    "Change failure rate",
                    chart::chart(
                        "change_failure_rate",
                        "Change failure rate",
                        Unit::Fraction,
                        false,
                        &[one("failure rate", &|r| r.change_failure_rate)],
                    ),
                ),
                (
                    "Recovery and time to restore (median)",
                    chart::chart(
                        "time_to_restore_seconds",
                        "Failed deployment recovery and time to restore",
                        Unit::Seconds,
                        false,
                        &[
                            one("time to restore", &|r| r.time_to_restore_seconds),
                            one("deployment recovery", &|r| r.recovery_seconds),
                        ],
                    ),
                ),
            ];
            for (title, svg) in charts {
                let _ = write!(
                    body,
                    "<div class=\"card\"><h3>{}</h3>{svg}</div>",
                    esc(title)
                );
            }
            body.push_str("</div>");
            let dash = || "–".to_string();
            let rows: Vec<Vec<String>> = series
                .iter()
                .rev()
                .map(|(week, r)| {
                    vec![
                        esc(week),
                        r.deployments.to_string(),
                        r.frequency
                            .map(|f| f.as_str().to_string())
                            .unwrap_or_else(dash),
                        r.lead_time_seconds.map(human_duration).unwrap_or_else(dash),
                        r.change_failure_rate
                            .map(|c| {
                                format!(
                                    "{:.0}% ({} of {})",
                                    c * 100.0,
                                    r.failed_changes,
                                    r.judged_deployments
                                )
                            })
                            .unwrap_or_else(dash),
                        r.recovery_seconds.map(human_duration).unwrap_or_else(dash),
                        r.time_to_restore_seconds
                            .map(human_duration)
                            .unwrap_or_else(dash),
                        r.rolled_back.to_string(),
                    ]
                })
                .collect();
            body.push_str(&table(
                &[
                    "Week",
                    "Deployments",
                    "Frequency",
                    "Lead time",
                    "Failure rate",
                    "Recovery",
                    "Restore (all)",
                    "Rolled back",
                ],
                &rows,
            ));
            body.push_str("</section>");
        }
        Ok(self.page(Nav::Dora, "DORA", &body))
    }
}

/// The login page (also what an unauthenticated request gets, with status 401).
pub fn login_page(message: Option<&str>) -> String {
    let note = message
        .map(|m| format!("<p class=\"bad\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{note}<p>This dashboard needs the token set in <code>SHIPGATE_DASHBOARD_TOKEN</code>.</p>\
         <form class=\"login\" method=\"post\" action=\"/login\"><input type=\"password\" name=\"token\" autocomplete=\"current-password\" aria-label=\"token\" required><button type=\"submit\">Sign in</button></form>"
    );
    page(Site::Live, Nav::Login, "Sign in", None, &body)
}
