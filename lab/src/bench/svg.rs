//! Hand-written SVG: a line chart (one line per engine, optional log axes) and a
//! horizontal grouped bar chart. Plain text output, no plotting crate.

use std::fmt::Write;

const W: f64 = 820.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const PALETTE: [&str; 8] =
    ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f", "#9467bd", "#8c564b", "#e377c2"];

/// One line: a label and its (x, y) points.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An axis: maps values to [0, 1], linear or log10.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> Axis {
        let v: Vec<f64> = values.filter(|x| x.is_finite() && (!log || *x > 0.0)).collect();
        let mut lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let mut hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil().max(lo.log10() + 1.0));
        } else {
            if from_zero {
                lo = lo.min(0.0);
            }
            if hi <= lo {
                hi = lo + 1.0;
            }
            hi *= 1.05;
        }
        Axis { lo, hi, log }
    }

    fn frac(&self, x: f64) -> f64 {
        if self.log {
            (x.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (x - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10() as i32, self.hi.log10() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5).map(|i| self.lo + (self.hi - self.lo) * i as f64 / 5.0).collect()
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        (LEFT + W - RIGHT) / 2.0,
        esc(title)
    );
}

/// A line chart with one line per entry of `lines`.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    log_y: bool,
    lines: &[Line],
) -> String {
    let xs = Axis::new(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)), log_x, false);
    let ys = Axis::new(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)), log_y, true);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + xs.frac(x) * pw;
    let py = |y: f64| TOP + (1.0 - ys.frac(y)) * ph;
    let mut out = String::new();
    header(&mut out, title);
    for t in xs.ticks() {
        let x = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_num(t)
        );
    }
    for t in ys.ticks() {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 18.0,
        esc(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, l) in lines.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = l.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> =
            pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            color(i),
            path.join(" ")
        );
        if pts.len() <= 60 {
            for (x, y) in &pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                    px(*x),
                    py(*y),
                    color(i)
                );
            }
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = W - RIGHT + 14.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{ly}" width="14" height="4" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            color(i),
            lx + 20.0,
            ly + 6.0,
            esc(&l.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Horizontal grouped bars: for each group (a case), one bar per (engine, value).
pub fn bar_chart(
    title: &str,
    x_label: &str,
    engines: &[String],
    groups: &[(String, Vec<Option<f64>>)],
) -> String {
    let bar = 9.0;
    let gap = 10.0;
    let label_w = 250.0;
    let group_h = engines.len() as f64 * bar + gap;
    let height = TOP + groups.len() as f64 * group_h + BOTTOM;
    let xs = Axis::new(groups.iter().flat_map(|g| g.1.iter().flatten().copied()), false, true);
    let pw = W - label_w - RIGHT;
    let px = |x: f64| label_w + xs.frac(x) * pw;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        W / 2.0,
        esc(title)
    );
    let bottom = height - BOTTOM;
    for t in xs.ticks() {
        let x = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            bottom + 14.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        label_w + pw / 2.0,
        height - 20.0,
        esc(x_label)
    );
    for (gi, (name, values)) in groups.iter().enumerate() {
        let y0 = TOP + gi as f64 * group_h;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 6.0,
            y0 + group_h / 2.0,
            esc(name)
        );
        for (ei, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let y = y0 + ei as f64 * bar;
                let _ = writeln!(
                    out,
                    r#"<rect x="{label_w}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                    (px(*v) - label_w).max(0.5),
                    bar - 1.0,
                    color(ei)
                );
            }
        }
    }
    for (i, e) in engines.iter().enumerate() {
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = W - RIGHT + 14.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{ly}" width="14" height="8" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            color(i),
            lx + 20.0,
            ly + 8.0,
            esc(e)
        );
    }
    out.push_str("</svg>\n");
    out
}
