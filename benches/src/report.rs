//! The suite's report: a markdown table of nanoseconds per operation and of
//! ratios to each contestant's baseline, and an SVG chart of the ratios.
//!
//! The chart is written as plain SVG (bars, lines and text elements) rather
//! than through a plotting crate: text layout there needs a font back end
//! (system fonts through fontconfig, or a bundled font file), which a fresh
//! machine does not have, and a bar chart needs nothing of it.

use std::fmt::Write;

use crate::measure::Measurement;
use crate::workloads::Workload;

/// One ratio the report shows: `subject` over `baseline`, with the target
/// it must stay within.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The measured contestant.
    pub subject: String,
    /// What it is compared with.
    pub baseline: String,
    /// The highest acceptable ratio.
    pub target: f64,
    /// The target applies to writes only (the changelog adds nothing to
    /// reads by design, so only its writes are held to it).
    pub writes_only: bool,
}

impl Comparison {
    /// The column title, e.g. `heap / raw HashMap`.
    pub fn title(&self) -> String {
        format!("{} / {}", self.subject, self.baseline)
    }
}

/// Everything one run of the suite measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Lines about the run (machine, key count, rounds), printed first.
    pub context: Vec<String>,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
    /// The ratios to show.
    pub comparisons: Vec<Comparison>,
}

/// The colours of the comparisons' bars, in order.
const COLOURS: [&str; 6] = [
    "#4878d0", "#ee854a", "#6acc64", "#d65f5f", "#956cb4", "#8c613c",
];

impl Report {
    /// The median of `contestant` on `workload`, in ns/op.
    pub fn median(&self, workload: Workload, contestant: &str) -> Option<f64> {
        self.measurements
            .iter()
            .find(|m| m.workload == workload && m.contestant == contestant)
            .map(Measurement::median_ns)
    }

    /// `comparison`'s ratio on `workload`.
    pub fn ratio(&self, workload: Workload, comparison: &Comparison) -> Option<f64> {
        Some(
            self.median(workload, &comparison.subject)?
                / self.median(workload, &comparison.baseline)?,
        )
    }

    /// Whether `comparison` holds its target on `workload` (`None`: no
    /// target applies, or nothing was measured).
    pub fn within_target(&self, workload: Workload, comparison: &Comparison) -> Option<bool> {
        if comparison.writes_only && !workload.writes() {
            return None;
        }
        Some(self.ratio(workload, comparison)? <= comparison.target)
    }

    /// The workloads measured, in suite order.
    pub fn workloads(&self) -> Vec<Workload> {
        Workload::ALL
            .into_iter()
            .filter(|w| self.measurements.iter().any(|m| m.workload == *w))
            .collect()
    }

    /// The contestants measured, in the order first seen.
    pub fn contestants(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for m in &self.measurements {
            if !names.contains(&m.contestant) {
                names.push(m.contestant.clone());
            }
        }
        names
    }

    /// The report as markdown: context, a table of medians (ns/op) and a
    /// table of ratios, ratios above their target in bold.
    ///
    /// ```
    /// use state_benches::measure::Measurement;
    /// use state_benches::report::{Comparison, Report};
    /// use state_benches::workloads::Workload;
    /// let m = |c: &str, ns: f64| Measurement {
    ///     workload: Workload::ValueGet, contestant: c.into(), rounds_ns: vec![ns],
    /// };
    /// let report = Report {
    ///     context: vec![],
    ///     measurements: vec![m("raw", 50.0), m("heap", 90.0)],
    ///     comparisons: vec![Comparison {
    ///         subject: "heap".into(), baseline: "raw".into(), target: 2.0, writes_only: false,
    ///     }],
    /// };
    /// assert!(report.markdown().contains("| valueGet | 50 | 90 |"));
    /// assert!(report.markdown().contains("| valueGet | 1.80 |"));
    /// ```
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for line in &self.context {
            let _ = writeln!(out, "{line}  ");
        }
        let contestants = self.contestants();
        let _ = writeln!(out, "\n### Nanoseconds per operation (median round)\n");
        let _ = writeln!(out, "| workload | {} |", contestants.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(contestants.len()));
        for workload in self.workloads() {
            let cells: Vec<String> = contestants
                .iter()
                .map(|c| self.median(workload, c).map_or("-".into(), format_ns))
                .collect();
            let _ = writeln!(out, "| {} | {} |", workload.name(), cells.join(" | "));
        }
        let _ = writeln!(
            out,
            "\n### Ratios (target in the header; **bold**: above it)\n"
        );
        let titles: Vec<String> = self
            .comparisons
            .iter()
            .map(|c| {
                let scope = if c.writes_only { " writes" } else { "" };
                format!("{} (<= {}{scope})", c.title(), c.target)
            })
            .collect();
        let _ = writeln!(out, "| workload | {} |", titles.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(titles.len()));
        for workload in self.workloads() {
            let cells: Vec<String> = self
                .comparisons
                .iter()
                .map(
                    |c| match (self.ratio(workload, c), self.within_target(workload, c)) {
                        (None, _) => "-".into(),
                        (Some(r), Some(false)) => format!("**{r:.2}**"),
                        (Some(r), _) => format!("{r:.2}"),
                    },
                )
                .collect();
            let _ = writeln!(out, "| {} | {} |", workload.name(), cells.join(" | "));
        }
        out
    }

    /// The ratios as an SVG bar chart: one group of bars per workload, one
    /// bar per comparison, a line at 1 (as fast as the baseline) and one at
    /// each target.
    pub fn svg(&self) -> String {
        let workloads = self.workloads();
        let bars = self.comparisons.len().max(1);
        let (bar, gap, left, top, plot_width) = (7.0, 6.0, 110.0, 40.0, 640.0);
        let group = bar * bars as f64 + gap;
        let height = top + group * workloads.len() as f64 + 30.0 + 18.0 * bars as f64;
        let width = left + plot_width + 40.0;
        let max = self
            .measurements
            .iter()
            .flat_map(|m| {
                self.comparisons
                    .iter()
                    .filter_map(|c| self.ratio(m.workload, c))
            })
            .fold(2.5_f64, f64::max)
            .min(20.0)
            .ceil();
        let x = |ratio: f64| left + plot_width * ratio.min(max) / max;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="16" font-size="13">Time per operation relative to the baseline (lower is better)</text>"#
        );
        let plot_bottom = top + group * workloads.len() as f64;
        for tick in 0..=(max as u32) {
            let tx = x(f64::from(tick));
            let _ = writeln!(
                svg,
                r##"<line x1="{tx}" y1="{top}" x2="{tx}" y2="{plot_bottom}" stroke="#ddd"/><text x="{tx}" y="{}" text-anchor="middle">{tick}x</text>"##,
                top - 6.0
            );
        }
        for (i, workload) in workloads.iter().enumerate() {
            let y0 = top + group * i as f64;
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y0 + group / 2.0,
                workload.name()
            );
            for (j, comparison) in self.comparisons.iter().enumerate() {
                let Some(ratio) = self.ratio(*workload, comparison) else {
                    continue;
                };
                let y = y0 + bar * j as f64;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{left}" y="{y}" width="{:.1}" height="{}" fill="{}"><title>{}: {ratio:.2}</title></rect>"#,
                    x(ratio) - left,
                    bar - 1.0,
                    COLOURS[j % COLOURS.len()],
                    comparison.title()
                );
                if self.within_target(*workload, comparison).is_some() {
                    let tx = x(comparison.target);
                    let _ = writeln!(
                        svg,
                        r##"<line x1="{tx}" y1="{y}" x2="{tx}" y2="{}" stroke="#000"/>"##,
                        y + bar - 1.0
                    );
                }
            }
        }
        let one = x(1.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{one}" y1="{top}" x2="{one}" y2="{plot_bottom}" stroke="#000" stroke-dasharray="3,2"/>"##
        );
        for (j, comparison) in self.comparisons.iter().enumerate() {
            let y = plot_bottom + 24.0 + 18.0 * j as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{}" width="12" height="10" fill="{}"/><text x="{}" y="{y}">{} (target {}{}: black tick)</text>"#,
                y - 9.0,
                COLOURS[j % COLOURS.len()],
                left + 18.0,
                comparison.title(),
                comparison.target,
                if comparison.writes_only {
                    ", writes"
                } else {
                    ""
                }
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// `123.4` → `"123"`, `1234.5` → `"1,235"`.
fn format_ns(ns: f64) -> String {
    let rounded = ns.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
