//! Human durations in the policy file: `30s`, `15m`, `4h`, `1d`, `1h30m`.

use std::time::Duration;

/// Parses a duration made of `<number><unit>` parts with units `d`, `h`, `m`, `s`, largest
/// first and each at most once (`1h30m`, not `30m1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(
            "empty duration; write e.g. \"30s\", \"15m\", \"4h\", \"1d\" or \"1h30m\"".to_owned(),
        );
    }
    let mut total: u64 = 0;
    let mut next_unit = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?} (e.g. \"30s\", \"15m\", \"4h\", \"1d\", \"1h30m\")"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        let unit = rest[digits..].chars().next().ok_or_else(|| {
            format!("invalid duration {text:?}: missing unit after {number} (d, h, m or s)")
        })?;
        let Some(position) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {unit:?} (use d, h, m or s)"
            ));
        };
        if position < next_unit {
            return Err(format!(
                "invalid duration {text:?}: units must go from largest to smallest, each once"
            ));
        }
        next_unit = position + 1;
        total = number
            .checked_mul(UNITS[position].1)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way the policy file writes it.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}
