//! `thinly bench`: a reproducible, whole-system copy-on-write benchmark. It starts NBD
//! servers itself on unix sockets — thinly (this very binary, `thinly serve`), qemu-nbd on
//! raw and qcow2 files, nbdkit's file plugin, and nbdkit's null plugin as the transport
//! ceiling — drives each with fio's nbd engine, and writes a Markdown table, a CSV, SVG
//! plots and a results.json (machine, tool versions, exact command lines) to `--out`.
//!
//! Invariants: every server runs on a unix socket in a short private directory and is
//! stopped by a Drop guard (also on error and panic); every external command is bounded in
//! time; engines are interleaved (A B A B) across `--repeat` rounds and medians with
//! min/max are reported. A peer whose tool is missing or whose server does not start is
//! reported in the results, never silently dropped. Only the `thinly` command
//! (`tools/src/cli.rs`) calls into this module.

mod control;
mod env;
mod fio;
mod limits;
mod progress;
mod report;
mod results;
mod server;
mod suites;
mod svg;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use results::Results;

/// Arguments of `thinly bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Suite to run: basic, depth, cow, snapshots, tls or all.
    #[arg(long, default_value = "all", value_parser = ["all", "basic", "depth", "cow", "snapshots", "tls"])]
    pub suite: String,
    /// Where the table, CSV, plots and results.json go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// A smoke run (under 2 minutes): tiny sizes, short runs, one round.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of every measurement (engines interleaved in each) [default: 3, --quick 1].
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Directory for pools and images, on the filesystem under test [default: a new
    /// directory under /var/tmp, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds of each time-based fio run [default: 2, --quick 0.5].
    #[arg(long)]
    pub runtime: Option<f64>,
    /// Seconds of fio warm-up before each time-based run is measured [default: 0.5,
    /// --quick 0].
    #[arg(long)]
    pub ramp: Option<f64>,
    /// Keep the pools and images afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Run nothing: re-render the tables, CSV and plots of an earlier results.json into
    /// --out.
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
}

/// Sizes and durations of one run, fixed by --quick and the options.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub quick: bool,
    pub repeat: u32,
    #[serde(serialize_with = "results::ser_secs", deserialize_with = "results::de_secs")]
    pub runtime: Duration,
    #[serde(serialize_with = "results::ser_secs", deserialize_with = "results::de_secs")]
    pub ramp: Duration,
    /// `basic`: the provisioned region, read and overwritten after a sequential fill.
    pub region_bytes: u64,
    /// `basic`: each never-written region (reads of unprovisioned blocks, first writes).
    pub fresh_bytes: u64,
    /// `depth`: snapshot-chain depths measured, and the size of the data at the bottom.
    pub depths: Vec<u32>,
    pub depth_region_bytes: u64,
    /// `cow`: the region written once per case.
    pub cow_region_bytes: u64,
    /// `snapshots`: how many snapshots are created (then deleted) and where they are
    /// reported.
    pub snapshots_max: u32,
    pub snapshot_points: Vec<u32>,
}

impl Config {
    fn new(a: &BenchArgs) -> Result<Config> {
        let quick = a.quick;
        let secs = |v: Option<f64>, full: f64, quick_v: f64| -> Result<Duration> {
            let s = v.unwrap_or(if quick { quick_v } else { full });
            if !(0.0..=limits::MAX_RUNTIME_SECS).contains(&s) {
                bail!("{s} s is outside 0 … {} s", limits::MAX_RUNTIME_SECS);
            }
            Ok(Duration::from_secs_f64(s))
        };
        let cfg = Config {
            quick,
            repeat: a.repeat.unwrap_or(if quick { 1 } else { 3 }),
            runtime: secs(a.runtime, 2.0, 0.5)?,
            ramp: secs(a.ramp, 0.5, 0.0)?,
            region_bytes: if quick { 32 << 20 } else { 1 << 30 },
            fresh_bytes: if quick { 16 << 20 } else { 256 << 20 },
            depths: if quick { vec![1, 10] } else { vec![1, 10, 100, 500, 1000] },
            depth_region_bytes: if quick { 32 << 20 } else { 1 << 30 },
            cow_region_bytes: if quick { 16 << 20 } else { 512 << 20 },
            snapshots_max: if quick { 100 } else { 10_000 },
            snapshot_points: if quick { vec![1, 10, 100] } else { vec![1, 10, 100, 1000, 10_000] },
        };
        if cfg.repeat == 0 || cfg.repeat > limits::MAX_REPEAT {
            bail!("--repeat must be 1 … {}", limits::MAX_REPEAT);
        }
        if cfg.runtime.is_zero() {
            bail!("--runtime must be more than 0");
        }
        Ok(cfg)
    }
}

/// `thinly bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    if let Some(path) = &a.from_json {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a thinly bench results.json", path.display()))?;
        std::fs::create_dir_all(&a.out)
            .with_context(|| format!("creating the output directory {}", a.out.display()))?;
        return report::write_all(&results, &a.out);
    }
    let started = Instant::now();
    let cfg = Config::new(a)?;
    let tools = env::Tools::find();
    if tools.fio.is_none() {
        bail!(
            "fio is not installed (apt-get install fio): the harness drives every engine with it"
        );
    }
    let ws = env::Workspace::create(a.dir.as_deref(), a.keep)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating the output directory {}", a.out.display()))?;
    let mut results = Results::new(&cfg, &tools, &ws)?;
    results.note_load("start");
    let suites: Vec<&str> = match a.suite.as_str() {
        "all" => suites::ALL.to_vec(),
        one => vec![one],
    };
    let mut ctx = suites::Ctx {
        cfg: &cfg,
        tools: &tools,
        ws: &ws,
        results: &mut results,
        progress: progress::Progress::new(),
    };
    for missing in tools.missing_peers() {
        ctx.progress.warn(&format!("SKIPPED peer: {missing}"));
    }
    for suite in suites {
        let t = Instant::now();
        suites::run(&mut ctx, suite).with_context(|| format!("suite {suite}"))?;
        ctx.results.note_load(&format!("after {suite}"));
        ctx.progress.note(&format!("suite {suite} done in {:.0} s", t.elapsed().as_secs_f64()));
    }
    ctx.progress.finish();
    results.total_secs = started.elapsed().as_secs_f64();
    report::write_all(&results, &a.out)?;
    eprintln!(
        "thinly bench: done in {:.0} s; results in {}",
        results.total_secs,
        a.out.join("results.md").display()
    );
    Ok(())
}
