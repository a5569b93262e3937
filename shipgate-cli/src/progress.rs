//! Progress bars for the long operator commands (backup verify and restore). They go to
//! stderr and only when stderr is a terminal: in a pipe, a log file or CI they would be
//! control characters in the middle of the output.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar, or nothing when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
}

const BYTES: &str = "{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({eta})";
const ITEMS: &str = "{msg:>10} [{bar:30}] {pos}/{len} items ({eta})";

impl Progress {
    /// A bar counting bytes up to `total`.
    pub fn bytes(total: u64, message: &'static str) -> Self {
        Self::new(total, message, BYTES)
    }

    fn new(total: u64, message: &'static str, template: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(style(template));
        bar.set_message(message);
        Progress { bar: Some(bar) }
    }

    /// Moves the bar to `position`.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// Switches the bar to counting items up to `total` (the writing half of a restore).
    pub fn switch_to_items(&self, total: u64, message: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_style(style(ITEMS));
            bar.set_length(total);
            bar.set_position(0);
            bar.set_message(message);
        }
    }

    /// Removes the bar so the command's own output starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a bad one falls back to the default style.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
