//! Time arithmetic shared by the domain, the use cases and the jobs: a deadline `d` after a
//! timestamp, and the seconds between two timestamps, both saturating instead of failing.
//!
//! Durations come from policy files and constants and can be far larger than any real
//! timestamp allows; a deadline past the end of time is "never", not an error.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `t + d`, or [`Timestamp::MAX`] when the sum is past the largest timestamp.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Seconds from `from` to `to`, never negative (a clock that stepped back counts as zero).
pub fn elapsed_secs(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn adding_a_duration_moves_a_timestamp_forward() {
        assert_eq!(
            add(t("2026-03-02T10:00:00Z"), Duration::from_secs(90 * 60)),
            t("2026-03-02T11:30:00Z")
        );
        assert_eq!(
            add(t("2026-03-02T10:00:00Z"), Duration::ZERO),
            t("2026-03-02T10:00:00Z")
        );
    }

    #[test]
    fn adding_past_the_end_of_time_saturates() {
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), Timestamp::MAX);
        assert_eq!(
            add(t("2026-03-02T10:00:00Z"), Duration::MAX),
            Timestamp::MAX
        );
    }

    #[test]
    fn elapsed_seconds_are_never_negative() {
        let a = t("2026-03-02T10:00:00Z");
        let b = t("2026-03-02T10:00:04.5Z");
        assert_eq!(elapsed_secs(a, b), 4.5);
        assert_eq!(elapsed_secs(b, a), 0.0);
    }
}
