//! The suites (`basic`, `depth`, `cow`, `snapshots`, `sweep`, `trace`) and what they share: the run context,
//! starting an engine on a fresh image or volume (`Instance`), running one fio job into a
//! result row, and recording space usage. A failure of one engine (missing tool, server
//! that does not start, failed run) is recorded in the results and the run goes on.

mod basic;
mod cow;
mod depth;
mod snapshots;
mod sweep;
mod tls;
mod trace;

use super::control::Control;
use super::env::{self, Tools, Workspace};
use super::fio::{self, Job};
use super::limits;
use super::progress::Progress;
use super::results::{IoSample, Kind, Results, SpaceRow};
use super::server::{Engine, PoolSettings, Server};
use super::Config;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const ALL: [&str; 7] = ["basic", "depth", "cow", "snapshots", "sweep", "trace", "tls"];

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Queue depth of the sequential 1 MiB runs and of fills.
const SEQ_QD: u32 = 8;

pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub tools: &'a Tools,
    pub ws: &'a Workspace,
    /// The output directory (fio's job files and JSON go to `raw/` in it).
    pub out: &'a Path,
    pub results: &'a mut Results,
    pub progress: Progress,
    /// fio runs so far (numbers the raw files).
    pub nr_runs: u32,
}

pub fn run(ctx: &mut Ctx, suite: &str) -> Result<()> {
    match suite {
        "basic" => basic::run(ctx),
        "depth" => depth::run(ctx),
        "cow" => cow::run(ctx),
        "snapshots" => snapshots::run(ctx),
        "sweep" => sweep::run(ctx),
        "trace" => trace::run(ctx),
        "tls" => tls::run(ctx),
        other => anyhow::bail!("no suite {other:?} (one of {ALL:?})"),
    }
}

/// Measurements `suite` will make (the progress bar's share of it): cases × engines ×
/// rounds, with engines whose tools are missing left out.
pub fn count(cfg: &Config, tools: &Tools, suite: &str) -> u64 {
    let engines =
        |wanted: &[Engine]| wanted.iter().filter(|e| e.missing(tools).is_none()).count() as u64;
    let rounds = u64::from(cfg.repeat);
    match suite {
        "basic" => basic::CASES * engines(&basic::ENGINES) * rounds,
        "depth" => 2 * cfg.depths.len() as u64 * engines(&depth::ENGINES) * rounds,
        "cow" => cow::CASES * engines(&cow::ENGINES) * rounds,
        "snapshots" => snapshots::count(cfg, tools),
        "sweep" => {
            sweep::CASES * cfg.sweep_block_sizes.len() as u64 * engines(&sweep::ENGINES) * rounds
        }
        "trace" => trace::CASES * cfg.traces.len() as u64 * engines(&trace::ENGINES) * rounds,
        _ => 0,
    }
}

/// Where a result goes: suite, case, and for plotted cases the series and its x.
#[derive(Debug, Clone)]
pub struct Case {
    pub suite: &'static str,
    pub name: String,
    pub series: Option<(String, f64)>,
    /// Timings: what exactly is timed.
    pub measures: Option<String>,
}

impl Case {
    pub fn new(suite: &'static str, name: impl Into<String>) -> Case {
        Case { suite, name: name.into(), series: None, measures: None }
    }

    pub fn at(suite: &'static str, series: &str, x_label: &str, x: f64) -> Case {
        Case {
            suite,
            name: format!("{series}, {x_label} {x}"),
            series: Some((series.into(), x)),
            measures: None,
        }
    }

    pub fn measuring(mut self, what: &str) -> Case {
        self.measures = Some(what.into());
        self
    }
}

/// "rand read 4K qd1" → "rand-read-4k-qd1": file names of raw runs and plots.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

impl Ctx<'_> {
    /// The engines of `wanted` that can run here; the others are recorded as skipped.
    pub fn available(&mut self, suite: &str, wanted: &[Engine]) -> Vec<Engine> {
        let mut out = Vec::new();
        for e in wanted {
            match e.missing(self.tools) {
                None => out.push(*e),
                Some(why) => {
                    self.progress.warn(&format!("{suite}: skipping {}: {why}", e.label()));
                    self.record_error(&Case::new(leak(suite), "(engine)"), *e, Kind::Io, &why);
                    if !self.results.skipped.iter().any(|s| s.0 == e.label()) {
                        self.results.skipped.push((e.label().into(), why));
                    }
                }
            }
        }
        out
    }

    /// Records an error on a row (the first error of a row is kept).
    pub fn record_error(&mut self, case: &Case, engine: Engine, kind: Kind, err: &str) {
        self.progress.warn(&format!("{} / {} / {}: {err}", case.suite, case.name, engine.label()));
        let row = self.row(case, engine, kind);
        if row.error.is_none() {
            row.error = Some(err.to_string());
        }
    }

    fn row(&mut self, case: &Case, engine: Engine, kind: Kind) -> &mut super::results::Row {
        let row = self.results.row(case.suite, &case.name, engine.label(), kind);
        row.ceiling = engine.is_ceiling();
        if let Some((series, x)) = &case.series {
            row.series = Some(series.clone());
            row.x = Some(*x);
        }
        row
    }

    /// Runs `job` on `inst` and records the figures (or the error) under `case`, with
    /// the server's CPU time per I/O and the run's raw files.
    pub fn fio(&mut self, case: &Case, inst: &mut Instance, job: &Job) -> Option<IoSample> {
        self.progress.step(&format!("{}: {} — {}", case.suite, case.name, inst.engine.label()));
        let fio = self.tools.fio.clone()?;
        let job = job.clone().with_seed(self.cfg.seed);
        let uri = inst.server.uri(&inst.export);
        let name = format!("{}-{}-{}", case.suite, slug(&case.name), slug(inst.engine.label()));
        let (raw_rel, raw) = self.raw_path(&name);
        let pid = inst.server.pid();
        // CPU time from the end of the ramp (sampled by a thread that sleeps through it)
        // to the end of the run: the part fio counts.
        let (result, cpu) = std::thread::scope(|sc| {
            let ramp = job.ramp;
            let before = sc.spawn(move || {
                std::thread::sleep(ramp);
                pid.and_then(env::cpu_secs)
            });
            let r = fio::run(&fio, &job, &uri, &raw, inst.server.client_home());
            let after = pid.and_then(env::cpu_secs);
            (r, before.join().ok().flatten().zip(after))
        });
        self.progress.inc();
        match result {
            Ok((mut sample, cmd)) => {
                sample.raw = Some(raw_rel);
                sample.server_cpu_us_per_io = cpu
                    .zip(sample.total_ios)
                    .and_then(|((b, a), n)| (n > 0 && a >= b).then(|| (a - b) * 1e6 / n as f64));
                inst.written_bytes += sample.write_bytes;
                if sample.write_bytes > 0 {
                    self.settle(inst);
                }
                let row = self.row(case, inst.engine, Kind::Io);
                if job.writes() {
                    row.flush = Some(job.flush.label());
                }
                row.io.push(sample.clone());
                if row.commands.is_empty() {
                    row.commands.push(cmd);
                }
                Some(sample)
            }
            Err(e) => {
                let server = inst.server.exited().map(|s| format!("{s}\n")).unwrap_or_default();
                self.record_error(case, inst.engine, Kind::Io, &format!("{server}{e:#}"));
                None
            }
        }
    }

    /// The next raw file stem: (relative to the output directory, full path).
    fn raw_path(&mut self, name: &str) -> (String, PathBuf) {
        self.nr_runs += 1;
        let rel = format!("raw/{:05}-{name}", self.nr_runs);
        let full = self.out.join(&rel);
        (rel, full)
    }

    /// Flushes `inst`, untimed, after a case that wrote: the next case then starts with
    /// nothing left to write back, for every engine alike (thinly would otherwise be
    /// syncing the last case's writes in its timer commit, the others in the kernel's
    /// background writeback).
    fn settle(&mut self, inst: &Instance) {
        if inst.server.net.is_some() {
            // qemu-io cannot take libnbd's TLS URI; the `tls` suite settles neither
            // transport, so TCP and TLS are measured alike.
            return;
        }
        let Some(qemu_io) = self.tools.qemu_io.clone() else { return };
        let uri = inst.server.uri(&inst.export);
        let mut cmd = Command::new(qemu_io);
        cmd.args(["-f", "raw", &uri, "-c", "flush"]);
        match env::run_bounded(&mut cmd, limits::TOOL_SHORT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => self.progress.warn(&format!(
                "flushing {} failed ({}): {}",
                inst.engine.label(),
                out.status,
                env::tail(&String::from_utf8_lossy(&out.stderr))
            )),
            Err(e) => self.progress.warn(&format!("flushing {}: {e:#}", inst.engine.label())),
        }
    }

    /// Records one timing (milliseconds) under `case`.
    pub fn time(&mut self, case: &Case, engine: Engine, ms: f64, command: Option<String>) {
        let measures = case.measures.clone();
        let row = self.row(case, engine, Kind::TimeMs);
        if row.measures.is_none() {
            row.measures = measures;
        }
        row.time_ms.push(ms);
        if let (true, Some(c)) = (row.commands.is_empty(), command) {
            row.commands.push(c);
        }
    }

    /// Fills `[offset, offset+size)` of `inst` sequentially (1 MiB writes).
    pub fn fill(
        &mut self,
        suite: &'static str,
        inst: &mut Instance,
        offset: u64,
        size: u64,
    ) -> Result<()> {
        let fio = self.tools.fio.clone().context("fio is not installed")?;
        self.progress.step(&format!(
            "{suite}: filling {} MiB on {}",
            size / MIB,
            inst.engine.label()
        ));
        let job = Job::pass("write", MIB, SEQ_QD, offset, size, limits::FIO_PASS_MAX);
        let (_, raw) = self.raw_path(&format!("{suite}-fill-{}", slug(inst.engine.label())));
        let (s, _) =
            fio::run(&fio, &job, &inst.server.uri(&inst.export), &raw, inst.server.client_home())?;
        inst.written_bytes += s.write_bytes;
        Ok(())
    }

    /// Records the space `inst` uses now (after `suite`).
    pub fn record_space(&mut self, suite: &str, inst: &mut Instance, note: &str) {
        let (data, meta) = match inst.usage() {
            Ok(u) => u,
            Err(e) => {
                self.progress.warn(&format!("{suite}: space of {}: {e:#}", inst.engine.label()));
                return;
            }
        };
        self.results.space.retain(|s| !(s.suite == suite && s.engine == inst.engine.label()));
        self.results.space.push(SpaceRow {
            suite: suite.into(),
            engine: inst.engine.label().into(),
            written_bytes: inst.written_bytes,
            data_bytes: data,
            metadata_bytes: meta,
            note: note.into(),
        });
    }
}

/// Suite names are 'static; the "(engine)" row of `available` needs one.
fn leak(suite: &str) -> &'static str {
    ALL.iter().copied().find(|s| *s == suite).unwrap_or("?")
}

/// One engine serving one fresh image (or thinly volume) for a suite.
pub struct Instance {
    pub engine: Engine,
    pub server: Server,
    pub export: String,
    /// thinly: the control connection.
    pub control: Option<Control>,
    /// The image file (raw, qcow2, nbdkit file); thinly: the pool directory.
    pub path: Option<PathBuf>,
    pub written_bytes: u64,
}

impl Instance {
    /// Starts `engine` on a new, never-written image of `size_bytes` in `dir` (thinly: a
    /// pool in `dir/pool` with a volume `vol`), with the run's pool settings and qcow2
    /// cluster size.
    pub fn fresh(ctx: &mut Ctx, engine: Engine, dir: &Path, size_bytes: u64) -> Result<Instance> {
        let (pool, cluster) = (ctx.cfg.pool.clone(), ctx.cfg.qcow2_cluster_bytes);
        Instance::fresh_with(ctx, engine, dir, size_bytes, &pool, cluster)
    }

    /// `fresh` with the given pool settings and qcow2 cluster size.
    pub fn fresh_with(
        ctx: &mut Ctx,
        engine: Engine,
        dir: &Path,
        size_bytes: u64,
        settings: &PoolSettings,
        cluster_bytes: u64,
    ) -> Result<Instance> {
        ctx.progress.step(&format!("starting {}", engine.label()));
        let inst = match engine {
            Engine::Thinly => {
                let pool = dir.join("pool");
                let server = Server::thinly(ctx.tools, ctx.ws, &pool, settings)?;
                let mut control =
                    Control::connect(server.control.as_deref().context("no control socket")?)?;
                control.create("vol", size_bytes)?;
                Instance::new(engine, server, "vol", Some(control), Some(pool))
            }
            Engine::QemuRaw | Engine::NbdkitFile => {
                let file = dir.join("disk.raw");
                sparse_file(&file, size_bytes)?;
                let server = if engine == Engine::QemuRaw {
                    Server::qemu_nbd(ctx.tools, ctx.ws, "raw", &file)?
                } else {
                    Server::nbdkit(ctx.tools, ctx.ws, Some(&file), size_bytes)?
                };
                Instance::new(engine, server, "bench", None, Some(file))
            }
            Engine::QemuQcow2 => {
                let file = dir.join("disk.qcow2");
                qemu_img_create(ctx.tools, &file, None, size_bytes, false, cluster_bytes)?;
                let server = Server::qemu_nbd(ctx.tools, ctx.ws, "qcow2", &file)?;
                Instance::new(engine, server, "bench", None, Some(file))
            }
            Engine::NbdkitNull => {
                let server = Server::nbdkit(ctx.tools, ctx.ws, None, size_bytes)?;
                Instance::new(engine, server, "bench", None, None)
            }
            Engine::ThinlyNull => {
                let server = Server::thinly_null(ctx.tools, ctx.ws, size_bytes)?;
                Instance::new(engine, server, "bench", None, None)
            }
            Engine::QsdQcow2 => {
                anyhow::bail!("qemu-storage-daemon serves only the snapshots suite's live run")
            }
        };
        ctx.results.server_command(engine.label(), &inst.server.command);
        Ok(inst)
    }

    pub fn new(
        engine: Engine,
        server: Server,
        export: &str,
        control: Option<Control>,
        path: Option<PathBuf>,
    ) -> Instance {
        Instance { engine, server, export: export.into(), control, path, written_bytes: 0 }
    }

    /// (data bytes, metadata bytes) in use.
    pub fn usage(&mut self) -> Result<(u64, Option<u64>)> {
        if let Some(c) = self.control.as_mut() {
            let (data, meta) = c.usage()?;
            return Ok((data, Some(meta)));
        }
        match &self.path {
            Some(p) => Ok((env::allocated_bytes(p)?, None)),
            None => Ok((0, None)),
        }
    }
}

pub fn sparse_file(path: &Path, size_bytes: u64) -> Result<()> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size_bytes))
        .with_context(|| format!("creating the sparse file {}", path.display()))
}

/// `qemu-img create -f qcow2 -o cluster_size=C [-u] [-b BACKING -F qcow2] FILE SIZE`;
/// returns the command line. `unsafe_backing` skips opening the backing chain (-u).
pub fn qemu_img_create(
    tools: &Tools,
    file: &Path,
    backing: Option<&str>,
    size_bytes: u64,
    unsafe_backing: bool,
    cluster_bytes: u64,
) -> Result<String> {
    let prog = tools.qemu_img.as_ref().context("qemu-img is not installed")?;
    let mut cmd = Command::new(prog);
    cmd.args(["create", "-q", "-f", "qcow2", "-o"]).arg(format!("cluster_size={cluster_bytes}"));
    if let Some(b) = backing {
        if unsafe_backing {
            cmd.arg("-u");
        }
        cmd.args(["-b", b, "-F", "qcow2"]);
    }
    cmd.arg(file).arg(size_bytes.to_string());
    let shown = format!("{cmd:?}");
    env::run_ok(&mut cmd, limits::QEMU_DEEP_OP)?;
    Ok(shown)
}

/// "4K", "64K", "1M".
pub fn size_label(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}M", bytes / MIB)
    } else {
        format!("{}K", bytes / KIB)
    }
}
