//! Server-rendered SVG charts: bars for counts, lines for durations and rates, one point per
//! week. Every point carries its exact value (`data-value`, in the report's own unit) and its
//! week, so what is drawn can be checked against the report it came from; a week without a
//! value draws nothing there (a gap, never a zero).

use std::fmt::Write as _;

use super::html::esc;
use crate::domain::dora::human_duration;

/// How a chart's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Seconds, read as durations.
    Seconds,
    /// A fraction between 0 and 1, read as a percentage.
    Fraction,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Count => format!("{value:.0}"),
            Unit::Seconds => human_duration(value),
            Unit::Fraction => format!("{:.0}%", value * 100.0),
        }
    }
}

/// One line (or the bars) of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name, also the `data-series` of its points.
    pub name: String,
    /// `(week, value)` in order.
    pub points: Vec<(String, Option<f64>)>,
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;
const COLOURS: [&str; 3] = ["#0969da", "#bf3989", "#1a7f37"];

/// A round upper bound for the axis: 1, 2 or 5 times a power of ten, at least the largest
/// value (and 1 for a fraction).
fn axis_max(unit: Unit, largest: f64) -> f64 {
    if unit == Unit::Fraction {
        return 1.0;
    }
    if largest <= 0.0 || !largest.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(largest.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * power >= largest {
            return step * power;
        }
    }
    largest
}

/// One chart: bars when `bars` (the first series only), lines otherwise.
pub fn chart(metric: &str, title: &str, unit: Unit, bars: bool, series: &[Series]) -> String {
    let weeks: Vec<&str> = series
        .first()
        .map(|s| s.points.iter().map(|(w, _)| w.as_str()).collect())
        .unwrap_or_default();
    let largest = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
        .fold(0.0_f64, f64::max);
    let max = axis_max(unit, largest);
    let n = weeks.len().max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / n;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let y_of = |v: f64| TOP + plot_h * (1.0 - (v / max).clamp(0.0, 1.0));

    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" data-metric=\"{}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(metric),
        esc(title)
    );
    let _ = write!(out, "<title>{}</title>", esc(title));
    // Axes and the top and bottom values.
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#d0d7de\"/><line x1=\"{LEFT}\" y1=\"{0}\" x2=\"{}\" y2=\"{0}\" stroke=\"#d0d7de\"/>",
        TOP + plot_h,
        W - RIGHT
    );
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"end\" fill=\"#57606a\">{}</text><text x=\"{0}\" y=\"{}\" font-size=\"13\" text-anchor=\"end\" fill=\"#57606a\">0</text>",
        LEFT - 6.0,
        TOP + 10.0,
        esc(&unit.format(max)),
        TOP + plot_h
    );
    // Week labels: every other week, and the last.
    for (i, week) in weeks.iter().enumerate() {
        if i % 2 == 0 || i + 1 == weeks.len() {
            let label = week.get(5..).unwrap_or(week);
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
                x_of(i),
                H - BOTTOM + 14.0,
                esc(label)
            );
        }
    }
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        if bars && k == 0 {
            for (i, (week, value)) in s.points.iter().enumerate() {
                let Some(v) = value else { continue };
                let y = y_of(*v);
                let _ = write!(
                    out,
                    "<rect class=\"point\" data-series=\"{}\" data-week=\"{}\" data-value=\"{v}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} {}: {}</title></rect>",
                    esc(&s.name),
                    esc(week),
                    x_of(i) - slot * 0.35,
                    slot * 0.7,
                    (TOP + plot_h - y).max(0.0),
                    esc(&s.name),
                    esc(week),
                    esc(&unit.format(*v))
                );
            }
            continue;
        }
        // A line through consecutive weeks that have a value; a gap where one has none.
        let mut path = String::new();
        let mut pen_down = false;
        for (i, (_, value)) in s.points.iter().enumerate() {
            match value {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x_of(i),
                        y_of(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(
                out,
                "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                path.trim_end()
            );
        }
        for (i, (week, value)) in s.points.iter().enumerate() {
            let Some(v) = value else { continue };
            let _ = write!(
                out,
                "<circle class=\"point\" data-series=\"{}\" data-week=\"{}\" data-value=\"{v}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"><title>{} {}: {}</title></circle>",
                esc(&s.name),
                esc(week),
                x_of(i),
                y_of(*v),
                esc(&s.name),
                esc(week),
                esc(&unit.format(*v))
            );
        }
    }
    // A legend when there is more than one line.
    if series.len() > 1 {
        for (k, s) in series.iter().enumerate() {
            let x = LEFT + 8.0 + 190.0 * k as f64;
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"13\" fill=\"#1b1f24\">{}</text>",
                H - 14.0,
                COLOURS[k % COLOURS.len()],
                x + 14.0,
                H - 5.0,
                esc(&s.name)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, values: &[Option<f64>]) -> Series {
        Series {
            name: name.into(),
            points: values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("2026-03-{:02}", 1 + 7 * i), *v))
                .collect(),
        }
    }

    #[test]
    fn every_point_carries_its_exact_value_and_a_missing_week_draws_nothing() {
        let svg = chart(
            "lead_time",
            "Lead time",
            Unit::Seconds,
            false,
            &[series("lead time", &[Some(3600.0), None, Some(5400.5)])],
        );
        assert_eq!(svg.matches("class=\"point\"").count(), 2);
        assert!(svg.contains("data-week=\"2026-03-01\" data-value=\"3600\""));
        assert!(svg.contains("data-week=\"2026-03-15\" data-value=\"5400.5\""));
        assert!(!svg.contains("data-week=\"2026-03-08\""));
        // The gap breaks the line: two separate moves.
        assert_eq!(svg.matches('M').count(), 2);
    }

    #[test]
    fn axes_round_up_and_fractions_read_as_percentages() {
        assert_eq!(axis_max(Unit::Count, 7.0), 10.0);
        assert_eq!(axis_max(Unit::Count, 13.0), 20.0);
        assert_eq!(axis_max(Unit::Seconds, 4000.0), 5000.0);
        assert_eq!(axis_max(Unit::Fraction, 0.2), 1.0);
        assert_eq!(axis_max(Unit::Count, 0.0), 1.0);
        assert_eq!(Unit::Fraction.format(0.25), "25%");
        let bars = chart(
            "deployments",
            "Deployments",
            Unit::Count,
            true,
            &[series("deployments", &[Some(4.0), Some(0.0)])],
        );
        assert_eq!(bars.matches("<rect class=\"point\"").count(), 2);
        // The largest bar is 4: the axis reads 5.
        assert!(bars.contains(">5</text>"), "{bars}");
    }
}
