//! `snapshots`: the time to create, then delete, snapshot number N, N = 1 … max, timed
//! like for like in two ways, each row saying which:
//!
//! - **live**: an operation of a running server on a connection opened before timing.
//!   thinly: a `snapshot`/`delete` request on its control socket (it includes the commit).
//!   qcow2: QMP `blockdev-snapshot-sync` to qemu-storage-daemon serving the image (a new
//!   overlay file, opened and put on top of the running chain).
//! - **spawned command**: a process started, run to its exit and reaped, as a script would.
//!   thinly: `thinly snapshot vol NAME --pool P` / `thinly delete NAME --pool P` (a process
//!   that connects to the running server). qcow2: `qemu-img create -f qcow2 -b PREV -F qcow2
//!   NEXT` on the chain (it opens the whole chain).
//!
//! Live thinly: every one of `vol-1` … `vol-max` is created (then deleted newest first) over
//! ONE connection; the figure at N is the median/min/max of the `WINDOW` operations from N
//! (ending at N for the last point). Spawned thinly: at each point, `WINDOW_SPAWNED` extra
//! snapshots are created and deleted by commands (both timed) and are gone again before
//! the live run goes on. qcow2 spawned: only the report points are timed; between them the
//! chain is built with -u (no chain open); a point whose time, extrapolated from the
//! previous one, would exceed `QEMU_DEEP_OP` is not attempted. Live qcow2: every overlay is
//! taken by QMP (until the daemon refuses, e.g. at its open-file limit).
//!
//! There is no qcow2 delete row: removing an external snapshot without losing the newer
//! data means merging it (`qemu-img commit` or a block job), which is a data copy, not the
//! delete of a snapshot; thinly's delete rows stand alone.

use super::{qemu_img_create, Case, Ctx, Instance, MIB};
use crate::bench::env::{self, Tools};
use crate::bench::limits;
use crate::bench::qmp::Qmp;
use crate::bench::results::{Curve, Kind};
use crate::bench::server::{Engine, Server};
use crate::bench::Config;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SUITE: &str = "snapshots";
/// thinly (and live qcow2) operations per report point.
const WINDOW: u32 = 10;
/// Spawned thinly commands per report point.
const WINDOW_SPAWNED: u32 = 3;
/// qcow2 timed creates per report point below depth 1000 (one above).
const QCOW2_WINDOW: u32 = 3;

const LIVE: &str = "live";
const SPAWNED: &str = "spawned command";

/// Measurements (report points × timed series) for the progress bar.
pub fn count(cfg: &Config, tools: &Tools) -> u64 {
    let points = cfg.snapshot_points.len() as u64;
    let thinly = 4 * points;
    let qcow2 = if Engine::QemuQcow2.missing(tools).is_none() { points } else { 0 };
    let qsd = if Engine::QsdQcow2.missing(tools).is_none() { points } else { 0 };
    thinly + qcow2 + qsd
}

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &[Engine::Thinly, Engine::QemuQcow2, Engine::QsdQcow2]);
    let dir = ctx.ws.fresh_dir("snapshots")?;
    for engine in engines {
        let sub = dir.join(format!("{engine:?}"));
        std::fs::create_dir_all(&sub)?;
        let r = match engine {
            Engine::Thinly => thinly(ctx, &sub),
            Engine::QsdQcow2 => qsd(ctx, &sub),
            _ => qcow2(ctx, &sub),
        };
        if let Err(e) = r {
            ctx.record_error(&Case::new(SUITE, "(run)"), engine, Kind::TimeMs, &format!("{e:#}"));
        }
        std::fs::remove_dir_all(&sub).ok();
    }
    Ok(())
}

fn case(op: &str, how: &str, n: u32, measures: &str) -> Case {
    Case::at(SUITE, &format!("{op} snapshot ({how})"), "N =", n as f64).measuring(measures)
}

/// The operations (1-based) whose times make up point `p` of a run of `max`.
fn window(p: u32, max: u32, w: u32) -> std::ops::RangeInclusive<u32> {
    if p + w - 1 > max {
        max.saturating_sub(w - 1).max(1)..=max
    } else {
        p..=p + w - 1
    }
}

const THINLY_LIVE: &str = "a request on an open control-socket connection (includes the commit)";
const THINLY_SPAWNED: &str =
    "`thinly snapshot`/`thinly delete`: process start, connect, request with commit, exit";

fn thinly(ctx: &mut Ctx, dir: &Path) -> Result<()> {
    let max = ctx.cfg.snapshots_max;
    let size = ctx.cfg.cow_region_bytes;
    let mut inst = Instance::fresh(ctx, Engine::Thinly, dir, size)?;
    ctx.fill(SUITE, &mut inst, 0, size)?;
    let path = inst.server.control.clone().context("no control socket")?;
    let pool = path.parent().context("the control socket is in the pool directory")?.to_path_buf();
    // ONE connection for every live operation.
    let mut control = crate::bench::control::Control::connect(&path)?;
    // A management operation commits: the fill's data is flushed before timing starts.
    control.create("warm-up", MIB)?;
    control.delete("warm-up")?;
    let points = ctx.cfg.snapshot_points.clone();
    let mut create_ms = Vec::with_capacity(max as usize);
    for n in 1..=max {
        if n.is_multiple_of(250) {
            ctx.progress.step(&format!("snapshots: thinly create {n}/{max}"));
        }
        let t = Instant::now();
        control.snapshot("vol", &format!("vol-{n}"))?;
        create_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if points.contains(&n) {
            thinly_spawned(ctx, &pool, n)?;
        }
    }
    ctx.record_space(SUITE, &mut inst, &format!("filled volume and {max} snapshots of it"));
    let mut delete_ms = vec![0.0; max as usize];
    for n in (1..=max).rev() {
        if n.is_multiple_of(250) {
            ctx.progress.step(&format!("snapshots: thinly delete {n}"));
        }
        let t = Instant::now();
        control.delete(&format!("vol-{n}"))?;
        delete_ms[n as usize - 1] = t.elapsed().as_secs_f64() * 1e3;
    }
    let cmd = r#"{"op":"snapshot","origin":"vol","name":"vol-N","read_only":false} / {"op":"delete","name":"vol-N"} on one control.sock connection"#;
    for (op, times) in [("create", &create_ms), ("delete", &delete_ms)] {
        for &p in &points {
            ctx.progress.inc();
            for n in window(p.min(max), max, WINDOW) {
                let c = case(op, LIVE, p, THINLY_LIVE);
                ctx.time(&c, Engine::Thinly, times[n as usize - 1], Some(cmd.into()));
            }
        }
        ctx.results.curves.push(Curve {
            suite: SUITE.into(),
            name: format!("{op} snapshot ({LIVE})"),
            engine: Engine::Thinly.label().into(),
            points: times.iter().enumerate().map(|(i, t)| [(i + 1) as f64, *t]).collect(),
        });
    }
    Ok(())
}

/// At point `p` (p snapshots exist): `WINDOW_SPAWNED` snapshots created, then deleted, each
/// by a `thinly` command, all timed.
fn thinly_spawned(ctx: &mut Ctx, pool: &Path, p: u32) -> Result<()> {
    let thinly = ctx.tools.thinly.clone();
    let names: Vec<String> = (0..WINDOW_SPAWNED).map(|i| format!("spawned-{p}-{i}")).collect();
    for (op, verb) in [("create", "snapshot"), ("delete", "delete")] {
        for name in &names {
            let mut cmd = Command::new(&thinly);
            cmd.arg(verb);
            if verb == "snapshot" {
                cmd.arg("vol");
            }
            cmd.arg(name).arg("--pool").arg(pool);
            let shown = format!("{cmd:?}");
            let t = Instant::now();
            env::run_ok(&mut cmd, limits::TOOL_SHORT)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            ctx.time(&case(op, SPAWNED, p, THINLY_SPAWNED), Engine::Thinly, ms, Some(shown));
        }
        ctx.progress.inc();
    }
    Ok(())
}

const QSD_LIVE: &str = "QMP blockdev-snapshot-sync on an open monitor connection (new overlay created, opened, made active)";

/// Live qcow2 snapshots: qemu-storage-daemon serving the filled image; overlay N on top of
/// N − 1 by QMP, every one timed.
fn qsd(ctx: &mut Ctx, dir: &Path) -> Result<()> {
    let max = ctx.cfg.snapshots_max;
    let size = ctx.cfg.cow_region_bytes;
    let base = dir.join("disk.qcow2");
    qemu_img_create(ctx.tools, &base, None, size, false, ctx.cfg.qcow2_cluster_bytes)?;
    let (server, qmp_path) = Server::qsd(ctx.tools, ctx.ws, &base)?;
    ctx.results.server_command(Engine::QsdQcow2.label(), &server.command);
    let mut inst = Instance::new(Engine::QsdQcow2, server, "bench", None, Some(base));
    ctx.fill(SUITE, &mut inst, 0, size)?;
    let mut qmp = Qmp::connect(&qmp_path)?;
    let mut times = Vec::with_capacity(max as usize);
    let mut failed = None;
    let started = Instant::now();
    for n in 1..=max {
        if started.elapsed() > limits::QSD_LIVE_BUDGET {
            let why = format!("the {} s budget was spent", limits::QSD_LIVE_BUDGET.as_secs());
            failed = Some((n, why));
            break;
        }
        if n.is_multiple_of(250) {
            ctx.progress.step(&format!("snapshots: qemu-storage-daemon overlay {n}/{max}"));
        }
        let node = if n == 1 { "top0".to_string() } else { format!("snap{}", n - 1) };
        let file = dir.join(format!("q{n}.qcow2"));
        let t = Instant::now();
        if let Err(e) = qmp.snapshot(&node, &file, &format!("snap{n}")) {
            failed = Some((n, format!("{e:#}")));
            break;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cmd = r#"{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"snapN-1","snapshot-file":"qN.qcow2","snapshot-node-name":"snapN","format":"qcow2"}}"#;
    for &p in &ctx.cfg.snapshot_points.clone() {
        ctx.progress.inc();
        let c = case("create", LIVE, p, QSD_LIVE);
        let w = window(p.min(max), max, WINDOW);
        if *w.end() as usize > times.len() {
            let why = match &failed {
                Some((n, why)) => format!("overlay {n} failed: {why}"),
                None => "not reached".to_string(),
            };
            ctx.record_error(&c, Engine::QsdQcow2, Kind::TimeMs, &why);
            continue;
        }
        for n in w {
            ctx.time(&c, Engine::QsdQcow2, times[n as usize - 1], Some(cmd.into()));
        }
    }
    ctx.results.curves.push(Curve {
        suite: SUITE.into(),
        name: format!("create snapshot ({LIVE})"),
        engine: Engine::QsdQcow2.label().into(),
        points: times.iter().enumerate().map(|(i, t)| [(i + 1) as f64, *t]).collect(),
    });
    drop(qmp);
    ctx.record_space(SUITE, &mut inst, &format!("filled base and {} overlays", times.len()));
    if let Some(s) = ctx
        .results
        .space
        .iter_mut()
        .find(|s| s.suite == SUITE && s.engine == Engine::QsdQcow2.label())
    {
        s.data_bytes = env::allocated_bytes(dir)?;
    }
    Ok(())
}

const QCOW2_SPAWNED: &str = "`qemu-img create -f qcow2 -b PREV -F qcow2 NEXT`: process start, opens the chain, writes the overlay, exit";

fn qcow2(ctx: &mut Ctx, dir: &Path) -> Result<()> {
    let max = ctx.cfg.snapshots_max;
    let size = ctx.cfg.cow_region_bytes;
    let cluster = ctx.cfg.qcow2_cluster_bytes;
    let mut base = Instance::fresh(ctx, Engine::QemuQcow2, dir, size)?;
    ctx.fill(SUITE, &mut base, 0, size)?;
    let written = base.written_bytes;
    drop(base);
    let name = |n: u32| if n == 0 { "disk.qcow2".to_string() } else { format!("q{n}.qcow2") };
    let points = ctx.cfg.snapshot_points.clone();
    let windows: Vec<(u32, std::ops::RangeInclusive<u32>)> = points
        .iter()
        .map(|&p| (p, window(p.min(max), max, if p >= 1000 { 1 } else { QCOW2_WINDOW })))
        .collect();
    let point_of = |n: u32| windows.iter().find(|(_, w)| w.contains(&n)).map(|(p, _)| *p);
    let is_last = |p: u32, n: u32| windows.iter().any(|(wp, w)| *wp == p && *w.end() == n);
    let mut built = 0;
    for n in 1..=max {
        let point = point_of(n);
        if n.is_multiple_of(250) {
            ctx.progress.step(&format!("snapshots: qcow2 chain {n}/{max}"));
        }
        let t = Instant::now();
        let file = dir.join(name(n));
        let unsafe_backing = point.is_none();
        let r =
            qemu_img_create(ctx.tools, &file, Some(&name(n - 1)), size, unsafe_backing, cluster);
        let cmd = match (r, point) {
            (Ok(cmd), _) => cmd,
            (Err(e), Some(p)) => {
                let c = case("create", SPAWNED, p, QCOW2_SPAWNED);
                ctx.record_error(&c, Engine::QemuQcow2, Kind::TimeMs, &format!("{e:#}"));
                break;
            }
            (Err(e), None) => return Err(e),
        };
        built = n;
        let Some(p) = point else { continue };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        ctx.time(&case("create", SPAWNED, p, QCOW2_SPAWNED), Engine::QemuQcow2, ms, Some(cmd));
        if !is_last(p, n) {
            continue;
        }
        ctx.progress.inc();
        // qemu-img opens the whole chain, so a create is at least linear in N and was
        // measured superlinear (5 s at N = 1000, 39 s at N = 2000); extrapolate
        // quadratically to the next point and stop before a point past the limit.
        let Some(q) = points.iter().copied().find(|q| *q > p && *q <= max) else { continue };
        let predicted_ms = ms * (q as f64 / n as f64).powi(2);
        if predicted_ms > limits::QEMU_DEEP_OP.as_secs_f64() * 1e3 {
            let why = format!(
                "not attempted: a safe create took {:.1} s at N = {n}; quadratic \
                 extrapolation gives {:.0} s at N = {q}, past the {} s limit",
                ms / 1e3,
                predicted_ms / 1e3,
                limits::QEMU_DEEP_OP.as_secs()
            );
            for r in points.iter().filter(|r| **r >= q) {
                let c = case("create", SPAWNED, *r, QCOW2_SPAWNED);
                ctx.record_error(&c, Engine::QemuQcow2, Kind::TimeMs, &why);
            }
            break;
        }
    }
    ctx.results.space.push(crate::bench::results::SpaceRow {
        suite: SUITE.into(),
        engine: Engine::QemuQcow2.label().into(),
        written_bytes: written,
        data_bytes: env::allocated_bytes(dir)?,
        metadata_bytes: None,
        note: format!("filled base and {built} overlays"),
    });
    Ok(())
}
