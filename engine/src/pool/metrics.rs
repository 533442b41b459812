//! The statistics snapshot as Prometheus text (exposition format 0.0.4, which OpenMetrics
//! scrapers read too): what `thinly serve --metrics ADDR` answers on GET /metrics.
//!
//! Names (the README's table lists them): every counter is `thinly_<name>_total`, the
//! volume counters once for the pool (label `pool`) and once per volume (`thinly_volume_…`,
//! labels `pool` and `volume`); nanosecond counters become seconds (`…_wait_seconds_total`);
//! commits are `thinly_commits_total{cause=…}`; lookups `thinly_lookups_total{depth=…}`.
//! Latencies are summaries in seconds with quantiles 0.5/0.9/0.99/0.999 and a `_max`
//! gauge: `thinly_request_latency_seconds{op=…}` and `thinly_commit_latency_seconds`.
//! Derived ratios are gauges, present only when defined.

use super::stats::{PoolCounter, StatsSnapshot, Summary, VolumeCounter};
use std::fmt::Write;

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `snap` of the pool labelled `pool` (its directory, say).
pub fn render(snap: &StatsSnapshot, pool: &str) -> String {
    let mut out = String::new();
    let p = format!("pool=\"{}\"", escape(pool));
    for c in VolumeCounter::ALL {
        let (name, scale) = metric_name(c.name());
        header(&mut out, &name, "counter", c.help());
        sample(&mut out, &name, &p, snap.pool_counter(c.name()) as f64 * scale);
        let vname = name.replacen("thinly_", "thinly_volume_", 1);
        header(&mut out, &vname, "counter", c.help());
        for (volume, counters) in &snap.volumes {
            let labels = format!("{p},volume=\"{}\"", escape(volume));
            let n = counters.get(c.name()).copied().unwrap_or(0);
            sample(&mut out, &vname, &labels, n as f64 * scale);
        }
    }
    header(&mut out, "thinly_commits_total", "counter", "commits by cause");
    for c in PoolCounter::ALL {
        if let Some(cause) = c.name().strip_prefix("commits_") {
            let labels = format!("{p},cause=\"{cause}\"");
            sample(&mut out, "thinly_commits_total", &labels, snap.pool_counter(c.name()) as f64);
        }
    }
    for c in PoolCounter::ALL.iter().filter(|c| !c.name().starts_with("commits_")) {
        let (name, scale) = metric_name(c.name());
        header(&mut out, &name, "counter", c.help());
        sample(&mut out, &name, &p, snap.pool_counter(c.name()) as f64 * scale);
    }
    header(&mut out, "thinly_lookups_total", "counter", "mapping lookups by b-tree depth");
    for (depth, n) in snap.lookup_depths.iter().enumerate().filter(|(_, n)| **n > 0) {
        let labels = format!("{p},depth=\"{depth}\"");
        sample(&mut out, "thinly_lookups_total", &labels, *n as f64);
    }
    render_latencies(&mut out, snap, &p);
    render_derived(&mut out, snap, &p);
    out
}

fn render_latencies(out: &mut String, snap: &StatsSnapshot, p: &str) {
    let name = "thinly_request_latency_seconds";
    header(out, name, "summary", "request latency by operation");
    let requests = snap.latency_us.iter().filter(|(op, _)| op.as_str() != "commit");
    let mut maxima = Vec::new();
    for (op, s) in requests {
        let labels = format!("{p},op=\"{op}\"");
        summary(out, name, &labels, s, 1e-6);
        maxima.push((labels, s.max * 1e-6));
    }
    header(out, "thinly_request_latency_max_seconds", "gauge", "longest request by operation");
    for (labels, max) in maxima {
        sample(out, "thinly_request_latency_max_seconds", &labels, max);
    }
    let commit = snap.latency_us.get("commit").copied().unwrap_or_default();
    header(out, "thinly_commit_latency_seconds", "summary", "commit latency");
    summary(out, "thinly_commit_latency_seconds", p, &commit, 1e-6);
    header(out, "thinly_commit_latency_max_seconds", "gauge", "longest commit");
    sample(out, "thinly_commit_latency_max_seconds", p, commit.max * 1e-6);
    let blocks = "thinly_commit_metadata_blocks";
    header(out, blocks, "summary", "metadata blocks written per commit");
    summary(out, blocks, p, &snap.commit_metadata_blocks, 1.0);
}

fn render_derived(out: &mut String, snap: &StatsSnapshot, p: &str) {
    let d = &snap.derived;
    let gauges = [
        (
            "thinly_write_amplification",
            d.write_amplification,
            "data-file bytes / client bytes written",
        ),
        (
            "thinly_write_amplification_with_metadata",
            d.write_amplification_with_metadata,
            "(data-file + metadata bytes) / client bytes written",
        ),
        ("thinly_cow_share", d.cow_share, "block writes that broke sharing / block writes"),
        ("thinly_lookup_depth_mean", d.lookup_depth_mean, "mean b-tree depth of lookups"),
    ];
    for (name, value, help) in gauges {
        if let Some(v) = value {
            header(out, name, "gauge", help);
            sample(out, name, p, v);
        }
    }
    header(out, "thinly_stats_seconds", "gauge", "seconds since the pool opened or stats reset");
    sample(out, "thinly_stats_seconds", p, snap.seconds);
}

/// `thinly_<name>_total`, with nanoseconds turned into seconds.
fn metric_name(name: &str) -> (String, f64) {
    match name.strip_suffix("_ns") {
        Some(stem) => (format!("thinly_{stem}_seconds_total"), 1e-9),
        None => (format!("thinly_{name}_total"), 1.0),
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

fn summary(out: &mut String, name: &str, labels: &str, s: &Summary, scale: f64) {
    for (q, v) in [("0.5", s.p50), ("0.9", s.p90), ("0.99", s.p99), ("0.999", s.p999)] {
        sample(out, name, &format!("{labels},quantile=\"{q}\""), v * scale);
    }
    sample(out, &format!("{name}_sum"), labels, s.mean * s.count as f64 * scale);
    sample(out, &format!("{name}_count"), labels, s.count as f64);
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_nanoseconds_become_seconds() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(metric_name("cell_wait_ns"), ("thinly_cell_wait_seconds_total".into(), 1e-9));
        assert_eq!(metric_name("read_bytes"), ("thinly_read_bytes_total".into(), 1.0));
    }
}
