//! `thinly bench`: a reproducible, whole-system copy-on-write benchmark. It starts NBD
//! servers itself on unix sockets — thinly (this very binary, `thinly serve`), thinly's own
//! server over a null export (thinly's transport ceiling), qemu-nbd on raw and qcow2 files,
//! qemu-storage-daemon (live qcow2 snapshots over QMP), nbdkit's file plugin, and nbdkit's
//! null plugin (a peer's transport) — drives each with fio's nbd engine, and writes a
//! Markdown table, a CSV, SVG plots, results.json (machine, tool versions, git commit, exact
//! command lines), the effective configuration (config.toml, which `--config` takes back)
//! and every fio run's job file and JSON output (raw/) to `--out`.
//! `thinly bench compare A B` puts two runs side by side.
//!
//! Invariants: every server runs on a unix socket in a short private directory and is
//! stopped by a Drop guard (also on error and panic); every external command is bounded in
//! time; engines are interleaved (A B A B) across rounds; rows report medians with min–max,
//! and ratios a confidence interval (`stats`). A peer whose tool is missing or whose server
//! does not start is reported in the results, never silently dropped. Only the `thinly`
//! command (`tools/src/cli.rs`) calls into this module.

mod compare;
mod config;
mod control;
mod env;
mod fio;
mod limits;
mod null_export;
mod plot;
mod progress;
mod qmp;
mod report;
mod results;
mod server;
mod stats;
mod suites;
mod traces;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use results::Results;

/// Arguments of `thinly bench`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// Suite to run: basic, depth, cow, snapshots, sweep, trace, tls or all [default: all, or
    /// the config file's].
    #[arg(long, value_parser = ["all", "basic", "depth", "cow", "snapshots", "sweep", "trace", "tls"])]
    pub suite: Option<String>,
    /// Where the table, CSV, plots, config.toml, raw fio output and results.json go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// A TOML file of settings (the config.toml an earlier run wrote, or any subset of
    /// its keys) for a reproducible run; options given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A smoke run (a few minutes): tiny sizes, short runs, one round.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of every measurement (engines interleaved in each) [default: 3, --quick 1].
    #[arg(long, visible_alias = "repeat")]
    pub rounds: Option<u32>,
    /// fio's randseed for every random job [default: a fixed seed, recorded].
    #[arg(long)]
    pub seed: Option<u64>,
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

/// `thinly bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchAction {
    /// Put two runs side by side: every (suite, case, engine) of A and B with the change
    /// per row and whether it clears the rounds' noise (a 95 % interval). A and B are
    /// results.json files or the output directories holding them.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Also write the table (Markdown) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (Used by the harness.) Serve a null export with thinly's NBD server until SIGTERM.
    #[command(hide = true)]
    ServeNull {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        size: u64,
        #[arg(long, default_value = "bench")]
        name: String,
    },
    /// Write the traces shipped with the trace suite (fio iolog v2) into DIR.
    WriteTraces { dir: PathBuf },
}

/// Sizes and durations of one run, fixed by --quick, the config file and the options.
/// Fields after `snapshot_points` are absent from results written before they existed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// fio's randseed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// thinly's pool settings (every suite but `sweep`, which varies the block size).
    #[serde(default)]
    pub pool: server::PoolSettings,
    /// qcow2's cluster size (every suite but `sweep`, which matches the pool's block size).
    #[serde(default = "default_cluster")]
    pub qcow2_cluster_bytes: u64,
    /// `sweep`: the block (and cluster) sizes, and the region written at each.
    #[serde(default)]
    pub sweep_block_sizes: Vec<u64>,
    #[serde(default)]
    pub sweep_region_bytes: u64,
    /// `trace`: the traces replayed: a shipped trace's name or a fio iolog's path.
    #[serde(default)]
    pub traces: Vec<String>,
    /// `trace`: replay at most this many I/Os of each trace (0: all of it).
    #[serde(default)]
    pub trace_max_ios: u64,
}

fn default_seed() -> u64 {
    fio::DEFAULT_SEED
}

fn default_cluster() -> u64 {
    64 << 10
}

impl Config {
    /// The defaults of a full or a quick run.
    fn defaults(quick: bool) -> Config {
        fn q<T>(quick: bool, full: T, small: T) -> T {
            if quick {
                small
            } else {
                full
            }
        }
        Config {
            quick,
            repeat: q(quick, 3, 1),
            runtime: Duration::from_secs_f64(q(quick, 2.0, 0.5)),
            ramp: Duration::from_secs_f64(q(quick, 0.5, 0.0)),
            region_bytes: q(quick, 1 << 30, 32 << 20),
            fresh_bytes: q(quick, 256 << 20, 16 << 20),
            depths: if quick { vec![1, 10] } else { vec![1, 10, 100, 500, 1000] },
            depth_region_bytes: q(quick, 1 << 30, 32 << 20),
            cow_region_bytes: q(quick, 512 << 20, 16 << 20),
            snapshots_max: q(quick, 10_000, 100),
            snapshot_points: if quick { vec![1, 10, 100] } else { vec![1, 10, 100, 1000, 10_000] },
            seed: fio::DEFAULT_SEED,
            pool: server::PoolSettings::default(),
            qcow2_cluster_bytes: default_cluster(),
            sweep_block_sizes: vec![64 << 10, 256 << 10, 1 << 20],
            sweep_region_bytes: q(quick, 256 << 20, 16 << 20),
            traces: traces::SHIPPED.iter().map(|t| t.name.to_string()).collect(),
            trace_max_ios: q(quick, 0, 300),
        }
    }

    /// The configuration of a run: defaults, then the config file, then the options.
    fn new(a: &BenchArgs, file: Option<&config::File>) -> Result<Config> {
        let quick = a.quick || file.is_some_and(|f| f.quick);
        let mut cfg = match file {
            Some(f) => f.apply(Config::defaults(quick))?,
            None => Config::defaults(quick),
        };
        let secs = |v: f64| -> Result<Duration> {
            if !(0.0..=limits::MAX_RUNTIME_SECS).contains(&v) {
                bail!("{v} s is outside 0 … {} s", limits::MAX_RUNTIME_SECS);
            }
            Ok(Duration::from_secs_f64(v))
        };
        if let Some(r) = a.rounds {
            cfg.repeat = r;
        }
        if let Some(s) = a.seed {
            cfg.seed = s;
        }
        if let Some(v) = a.runtime {
            cfg.runtime = secs(v)?;
        }
        if let Some(v) = a.ramp {
            cfg.ramp = secs(v)?;
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        if self.repeat == 0 || self.repeat > limits::MAX_REPEAT {
            bail!("--rounds must be 1 … {}", limits::MAX_REPEAT);
        }
        if self.runtime.is_zero() || self.runtime.as_secs_f64() > limits::MAX_RUNTIME_SECS {
            bail!("the runtime must be more than 0 and at most {} s", limits::MAX_RUNTIME_SECS);
        }
        for bs in self.sweep_block_sizes.iter().chain([&self.pool.block_size_bytes]) {
            if !bs.is_power_of_two() || !(64 << 10..=1 << 30).contains(bs) {
                bail!("block size {bs} is not a power of two from 64 KiB to 1 GiB");
            }
        }
        if !self.qcow2_cluster_bytes.is_power_of_two()
            || !(512..=2 << 20).contains(&self.qcow2_cluster_bytes)
        {
            bail!(
                "qcow2 cluster size {} is not a power of two from 512 B to 2 MiB",
                self.qcow2_cluster_bytes
            );
        }
        Ok(())
    }
}

/// `thinly bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    match &a.action {
        Some(BenchAction::Compare { a: old, b: new, out }) => {
            return compare::run(old, new, out.as_deref())
        }
        Some(BenchAction::ServeNull { socket, size, name }) => {
            return null_export::serve(socket, name, *size)
        }
        Some(BenchAction::WriteTraces { dir }) => return traces::write_shipped(dir),
        None => {}
    }
    if let Some(path) = &a.from_json {
        let results = Results::load(path)?;
        std::fs::create_dir_all(&a.out)
            .with_context(|| format!("creating the output directory {}", a.out.display()))?;
        return report::write_all(&results, &a.out);
    }
    let started = Instant::now();
    let file = a.config.as_deref().map(config::File::load).transpose()?;
    let cfg = Config::new(a, file.as_ref())?;
    let suite = a.suite.clone().or_else(|| file.as_ref().and_then(|f| f.suite.clone()));
    let suite = suite.unwrap_or_else(|| "all".into());
    let tools = env::Tools::find();
    if tools.fio.is_none() {
        bail!(
            "fio is not installed (apt-get install fio): the harness drives every engine with it"
        );
    }
    let ws = env::Workspace::create(a.dir.as_deref(), a.keep)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating the output directory {}", a.out.display()))?;
    config::write(&a.out.join("config.toml"), &suite, &cfg)?;
    let mut results = Results::new(&cfg, &tools, &ws)?;
    results.note_load("start");
    let suites: Vec<&str> = match suite.as_str() {
        "all" => suites::ALL.to_vec(),
        one => vec![suites::ALL.iter().copied().find(|s| *s == one).context("no such suite")?],
    };
    let total = suites.iter().map(|s| suites::count(&cfg, &tools, s)).sum();
    let mut ctx = suites::Ctx {
        cfg: &cfg,
        tools: &tools,
        ws: &ws,
        out: &a.out,
        results: &mut results,
        progress: progress::Progress::new(total),
        nr_runs: 0,
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
