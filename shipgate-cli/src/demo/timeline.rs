//! The demo's readable timeline: one line per thing that happened, stamped with the time since
//! the story began, who talked to whom, what it was and the state it led to.
//!
//! ```text
//! +0.412s  github → shipgate     deployment_protection_rule production 9f8e7d6 (run 1004)  → awaiting_approval (needs 2)
//! +0.520s  shipgate → slack      chat.postMessage C0PRODUCTION "Deploy octo-org/hello-world 9f8e7d6 to production?"
//! ```
//!
//! Lines are printed as they happen (the fakes print from their own tasks), so the offsets are
//! the truth even when two parties speak at once. Colours only when stdout is a terminal and
//! `NO_COLOR` is unset; the words carry the meaning either way.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a state or result reads: good news, something in progress, or trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Pending,
    Bad,
    Plain,
}

/// The tone a deployment state (or job result) is shown in.
pub fn tone_of(state: &str) -> Tone {
    match state {
        "approved" | "succeeded" | "rolled_back" | "resolved" | "passed" | "ok" | "pong" => {
            Tone::Good
        }
        "awaiting_approval" | "deploying" | "verifying" | "requested" | "progress" => Tone::Pending,
        "rejected" | "refused" | "rolling_back" | "failed" | "expired" | "open" | "triggered" => {
            Tone::Bad
        }
        _ => Tone::Plain,
    }
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BLUE: &str = "\x1b[34m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

/// Width of the "who → whom" column.
const ROUTE_WIDTH: usize = 25;
/// Longest quoted text (a Slack message, a job summary) shown on one line.
const MAX_QUOTE_CHARS: usize = 96;

/// Whether to colour: only for a terminal, and never when `NO_COLOR` is set (no-color.org).
pub fn colour_wanted(no_color_flag: bool) -> bool {
    !no_color_flag
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// A cheap handle to the one timeline; clones print to the same place.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    colour: bool,
    /// False in unit tests: lines are only remembered.
    echo: bool,
    out: Mutex<Out>,
}

#[derive(Default)]
struct Out {
    /// Every printed line, uncoloured: what the end-of-story checks and tests read.
    lines: Vec<String>,
    /// While an exchange is in flight: lines others printed meanwhile, `(plain, coloured)`.
    /// They are printed after the exchange's own line, which carries the earlier time.
    held: Option<Vec<(String, String)>>,
}

/// An exchange in flight: when it started, for its line's time stamp.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    at: Duration,
}

impl Timeline {
    pub fn new(colour: bool) -> Self {
        Timeline {
            inner: Arc::new(Inner {
                start: Instant::now(),
                colour,
                echo: true,
                out: Mutex::new(Out::default()),
            }),
        }
    }

    /// A timeline that prints nothing (unit tests read [`Timeline::lines`]).
    #[cfg(test)]
    pub fn silent() -> Self {
        Timeline {
            inner: Arc::new(Inner {
                start: Instant::now(),
                colour: false,
                echo: false,
                out: Mutex::new(Out::default()),
            }),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.inner.colour && !text.is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    fn tone_code(tone: Tone) -> &'static str {
        match tone {
            Tone::Good => GREEN,
            Tone::Pending => YELLOW,
            Tone::Bad => RED,
            Tone::Plain => "",
        }
    }

    fn party_code(party: &str) -> &'static str {
        match party {
            "github" => MAGENTA,
            "slack" => BLUE,
            "pagerduty" | "alertmanager" => RED,
            "scheduler" => CYAN,
            _ => BOLD,
        }
    }

    /// Prints one line now, or holds it while an exchange is in flight.
    fn emit(&self, plain: String, coloured: String) {
        let mut out = self.out();
        match out.held.as_mut() {
            Some(held) => held.push((plain, coloured)),
            None => write_line(&mut out, self.inner.echo, plain, &coloured),
        }
    }

    fn out(&self) -> std::sync::MutexGuard<'_, Out> {
        match self.inner.out.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Starts an exchange: until [`Timeline::finish`], other lines wait, so the exchange's
    /// line (printed once its answer is known) comes before what it caused.
    pub fn begin(&self) -> Exchange {
        let mut out = self.out();
        if out.held.is_none() {
            out.held = Some(Vec::new());
        }
        Exchange {
            at: self.inner.start.elapsed(),
        }
    }

    /// Ends an exchange: its line, stamped with its start, then the lines that waited.
    pub fn finish(&self, ex: Exchange, from: &str, to: &str, what: &str, result: Option<&str>) {
        let (plain, coloured) = self.format_step(ex.at, from, to, what, result);
        let mut out = self.out();
        write_line(&mut out, self.inner.echo, plain, &coloured);
        for (plain, coloured) in out.held.take().unwrap_or_default() {
            write_line(&mut out, self.inner.echo, plain, &coloured);
        }
    }

    /// Prints whatever waited for an exchange that ended without a line (it failed).
    pub fn release(&self) {
        let mut out = self.out();
        for (plain, coloured) in out.held.take().unwrap_or_default() {
            write_line(&mut out, self.inner.echo, plain, &coloured);
        }
    }

    /// One exchange that needs no waiting: `from` told `to` about `what`, which led to
    /// `result` (a state or outcome).
    pub fn step(&self, from: &str, to: &str, what: &str, result: Option<&str>) {
        let (plain, coloured) =
            self.format_step(self.inner.start.elapsed(), from, to, what, result);
        self.emit(plain, coloured);
    }

    fn format_step(
        &self,
        at: Duration,
        from: &str,
        to: &str,
        what: &str,
        result: Option<&str>,
    ) -> (String, String) {
        let offset = format!("{:>9}", format!("+{:.3}s", at.as_secs_f64()));
        let route_plain = format!("{from} → {to}");
        let pad = " ".repeat(ROUTE_WIDTH.saturating_sub(route_plain.chars().count()));
        let route = format!(
            "{} → {}",
            self.paint(Self::party_code(from), from),
            self.paint(Self::party_code(to), to)
        );
        let (result_plain, result_coloured) = match result {
            Some(r) => {
                let head = r.split_whitespace().next().unwrap_or(r);
                let code = Self::tone_code(tone_of(head));
                (
                    format!("  → {r}"),
                    format!("  → {}", self.paint(&format!("{BOLD}{code}"), r)),
                )
            }
            None => (String::new(), String::new()),
        };
        let plain = format!("{offset}  {route_plain}{pad}{what}{result_plain}");
        let coloured = format!(
            "{}  {route}{pad}{what}{result_coloured}",
            self.paint(DIM, &offset)
        );
        (plain, coloured)
    }

    /// A chapter heading.
    pub fn section(&self, title: &str) {
        self.emit(String::new(), String::new());
        let plain = format!("── {title}");
        let coloured = self.paint(BOLD, &plain);
        self.emit(plain, coloured);
    }

    /// A line of narration (what the viewer should notice, a pause).
    pub fn note(&self, text: &str) {
        let plain = format!("{:>9}  {text}", "");
        let coloured = format!("{:>9}  {}", "", self.paint(DIM, text));
        self.emit(plain, coloured);
    }

    /// A passed check, said in words.
    pub fn check(&self, text: &str) {
        let plain = format!("{:>9}  ✓ {text}", "");
        let coloured = format!("{:>9}  {}", "", self.paint(GREEN, &format!("✓ {text}")));
        self.emit(plain, coloured);
    }

    /// The story went wrong here.
    pub fn failure(&self, text: &str) {
        let plain = format!("{:>9}  ✗ {text}", "");
        let coloured = format!(
            "{:>9}  {}",
            "",
            self.paint(&format!("{BOLD}{RED}"), &format!("✗ {text}"))
        );
        self.emit(plain, coloured);
    }

    /// Free text without a time stamp (banner, summary).
    pub fn plain(&self, text: &str) {
        self.emit(text.to_string(), text.to_string());
    }

    /// Bold free text.
    pub fn headline(&self, text: &str) {
        self.emit(text.to_string(), self.paint(BOLD, text));
    }

    /// Every line printed so far, without colour codes.
    #[cfg(test)]
    pub fn lines(&self) -> Vec<String> {
        self.out().lines.clone()
    }
}

/// Writes one line to stdout and remembers its plain form. Output errors are ignored: a
/// closed pipe must not change how the story ends, and the exit code still tells.
fn write_line(out: &mut Out, echo: bool, plain: String, coloured: &str) {
    if echo {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{coloured}");
        let _ = stdout.flush();
    }
    out.lines.push(plain);
}

/// `text` in quotes, on one line, cut to a readable length.
pub fn quote(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = one_line.chars().take(MAX_QUOTE_CHARS).collect();
    if one_line.chars().count() > MAX_QUOTE_CHARS {
        cut.push('…');
    }
    format!("\"{cut}\"")
}

/// The first seven characters of a sha, as git shows it.
pub use shipgate::domain::short_sha as short;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_carry_offset_route_text_and_state() {
        let t = Timeline::silent();
        t.step(
            "github",
            "shipgate",
            "deployment_protection_rule production",
            Some("awaiting_approval (needs 2)"),
        );
        let lines = t.lines();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(line.trim_start().starts_with("+0."), "{line}");
        assert!(line.contains("github → shipgate"), "{line}");
        assert!(
            line.ends_with("deployment_protection_rule production  → awaiting_approval (needs 2)"),
            "{line}"
        );
        assert!(!line.contains('\x1b'), "{line}");
    }

    #[test]
    fn lines_printed_during_an_exchange_follow_its_own_line() {
        let t = Timeline::silent();
        let ex = t.begin();
        t.step("shipgate", "github", "review run 7 approved", None);
        t.finish(
            ex,
            "github",
            "shipgate",
            "protection rule",
            Some("approved"),
        );
        t.note("after");
        let lines = t.lines();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].contains("protection rule  → approved"),
            "{lines:?}"
        );
        assert!(lines[1].contains("review run 7 approved"), "{lines:?}");
        assert!(lines[2].ends_with("after"), "{lines:?}");
    }

    #[test]
    fn states_read_as_good_pending_or_bad() {
        assert_eq!(tone_of("rolled_back"), Tone::Good);
        assert_eq!(tone_of("verifying"), Tone::Pending);
        assert_eq!(tone_of("rolling_back"), Tone::Bad);
        assert_eq!(tone_of("refused"), Tone::Bad);
        assert_eq!(tone_of("linked"), Tone::Plain);
    }

    #[test]
    fn quotes_are_one_line_and_cut_to_length() {
        assert_eq!(quote("a\n  b"), "\"a b\"");
        let long = "x".repeat(200);
        let q = quote(&long);
        assert_eq!(q.chars().count(), MAX_QUOTE_CHARS + 3);
        assert!(q.ends_with("…\""));
    }
}
