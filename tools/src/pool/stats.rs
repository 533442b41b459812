//! `thinly stats [--json] [--watch SECONDS] [--reset] [--pool DIR] [VOLUME]`: the pool's
//! live statistics from its server's control socket (a pool that is not served is opened
//! here, so its figures start from zero). Text by default, the `StatsSnapshot` as JSON
//! with `--json` (one object a line under `--watch`). `--watch` prints every SECONDS, with
//! the rates over the last interval; `--count N` stops after N reports.

use super::control::Request;
use super::size::format_size;
use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::time::Duration;
use thinly_engine::pool::stats::{Counters, Derived, Summary, VolumeCounter as C};
use thinly_engine::pool::StatsSnapshot;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Only this volume's counters (latencies and commits are the pool's).
    pub volume: Option<String>,
    /// Print the statistics as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECONDS, with rates over the interval, until interrupted.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub watch: Option<f64>,
    /// With --watch: stop after N reports.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
    /// Zero every counter and histogram (prints the figures just before).
    #[arg(long, conflicts_with = "watch")]
    pub reset: bool,
    #[command(flatten)]
    pub pool: super::PoolArgs,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

pub fn run(a: &StatsArgs) -> Result<()> {
    let dir = a.pool.dir();
    let req = Request::Stats { volume: a.volume.clone(), reset: a.reset };
    let mut previous: Option<StatsSnapshot> = None;
    let mut reports = 0u64;
    loop {
        let r = super::run_request(&dir, &req)?;
        if !r.ok {
            bail!("{}", r.error.unwrap_or_else(|| "failed".into()));
        }
        let snap: StatsSnapshot =
            serde_json::from_value(r.result).context("reading the server's statistics")?;
        let text = match a.json {
            true if a.watch.is_some() => serde_json::to_string(&snap)?,
            true => serde_json::to_string_pretty(&snap)?,
            false => text(&snap, a.volume.as_deref(), previous.as_ref()),
        };
        super::print_quietly(&format!("{text}\n"))?;
        reports += 1;
        let Some(every) = a.watch else { return Ok(()) };
        if a.count.is_some_and(|n| reports >= n) {
            return Ok(());
        }
        previous = Some(snap);
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}

/// The human report: counters of the pool (or of `volume`), latencies, derived figures,
/// and the rates since `previous` when watching.
fn text(s: &StatsSnapshot, volume: Option<&str>, previous: Option<&StatsSnapshot>) -> String {
    let pick = |s: &StatsSnapshot| -> Counters {
        match volume {
            Some(v) => s.volumes.get(v).cloned().unwrap_or_default(),
            None => s.pool.clone(),
        }
    };
    let c = pick(s);
    let get = |k: C| c.get(k.name()).copied().unwrap_or(0);
    let mut out = String::new();
    let what = volume.map_or("pool".to_string(), |v| format!("volume {v}"));
    let _ = writeln!(out, "{what}: {:.1} s of statistics", s.seconds);
    if let Some(p) = previous {
        let dt = (s.seconds - p.seconds).max(1e-9);
        let (pc, cc) = (pick(p), &c);
        let rate = |k: C| {
            let now = cc.get(k.name()).copied().unwrap_or(0);
            now.saturating_sub(pc.get(k.name()).copied().unwrap_or(0)) as f64 / dt
        };
        let _ = writeln!(
            out,
            "rates: {:.0} reads/s {}/s, {:.0} writes/s {}/s, {:.0} flushes/s, {} data-file/s",
            rate(C::ReadRequests),
            format_size(rate(C::ReadBytes) as u64),
            rate(C::WriteRequests),
            format_size(rate(C::WriteBytes) as u64),
            rate(C::FlushRequests),
            format_size(
                (rate(C::DataClientBytes) + rate(C::DataCowBytes) + rate(C::DataZeroingBytes))
                    as u64
            ),
        );
    }
    let _ = writeln!(out, "\n{:<14}{:>12}{:>12}", "requests", "count", "bytes");
    for (name, n, b) in [
        ("read", C::ReadRequests, Some(C::ReadBytes)),
        ("write", C::WriteRequests, Some(C::WriteBytes)),
        ("write_zeroes", C::WriteZeroesRequests, Some(C::WriteZeroesBytes)),
        ("trim", C::TrimRequests, Some(C::TrimBytes)),
        ("flush", C::FlushRequests, None),
        ("fua", C::FuaRequests, None),
    ] {
        let bytes = b.map_or("-".to_string(), |b| format_size(get(b)));
        let _ = writeln!(out, "{name:<14}{:>12}{bytes:>12}", get(n));
    }
    let _ = writeln!(
        out,
        "\ndata file written: client {}, copy-on-write {}, zeroing {}",
        format_size(get(C::DataClientBytes)),
        format_size(get(C::DataCowBytes)),
        format_size(get(C::DataZeroingBytes)),
    );
    let _ = writeln!(
        out,
        "blocks: {} written, {} provisioned, {} copy-on-write breaks, {} unmapped",
        get(C::BlockWrites),
        get(C::BlocksProvisioned),
        get(C::CowBreaks),
        get(C::BlocksUnmapped),
    );
    let derived = match volume {
        Some(_) => Derived::of(&c, None, &[]),
        None => s.derived,
    };
    out.push_str(&derived_text(&derived));
    if volume.is_none() {
        out.push_str(&pool_text(s));
    }
    out.trim_end().to_string()
}

fn ratio(v: Option<f64>, percent: bool) -> String {
    match v {
        Some(r) if percent => format!("{:.1}%", r * 100.0),
        Some(r) => format!("{r:.2}"),
        None => "-".to_string(),
    }
}

fn derived_text(d: &Derived) -> String {
    format!(
        "write amplification {} (with metadata {}), writes that broke sharing {}\n",
        ratio(d.write_amplification, false),
        ratio(d.write_amplification_with_metadata, false),
        ratio(d.cow_share, true),
    )
}

/// What only the pool has: commits, frees, punches, lookups, waits, latencies.
fn pool_text(s: &StatsSnapshot) -> String {
    let n = |k: &str| s.pool_counter(k);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "commits: {} flush, {} fua, {} timer, {} management, {} other; {} metadata blocks \
         written (per commit: p50 {:.0}, max {:.0})",
        n("commits_flush"),
        n("commits_fua"),
        n("commits_timer"),
        n("commits_management"),
        n("commits_other"),
        n("metadata_blocks_written"),
        s.commit_metadata_blocks.p50,
        s.commit_metadata_blocks.max,
    );
    let _ = writeln!(
        out,
        "freed {} blocks; {} hole punches ({})",
        n("blocks_freed"),
        n("hole_punches"),
        format_size(n("hole_punch_bytes")),
    );
    let _ = writeln!(
        out,
        "lookups {} (mean b-tree depth {}); waits: {} for block cells ({:.3} ms), {} for the \
         metadata lock ({:.3} ms)",
        s.lookup_depths.iter().sum::<u64>(),
        ratio(s.derived.lookup_depth_mean, false),
        n("cell_waits"),
        n("cell_wait_ns") as f64 / 1e6,
        n("metadata_lock_waits"),
        n("metadata_lock_wait_ns") as f64 / 1e6,
    );
    let _ = writeln!(
        out,
        "\n{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency (µs)", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
    );
    for op in ["read", "write", "write_zeroes", "trim", "flush", "commit"] {
        let l: Summary = s.latency_us.get(op).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "{op:<14}{:>10}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
            l.count, l.mean, l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
    out
}
