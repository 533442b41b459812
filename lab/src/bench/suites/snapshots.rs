//! `snapshots`: the time to create, then delete, snapshot number N, N = 1 … max.
//!
//! thinly: a filled volume `vol`; over ONE control-socket connection, snapshots `vol-1` …
//! `vol-max` of it are created, then deleted newest first; every operation is timed (it
//! includes the commit) and the figure at N is the median/min/max of the `WINDOW`
//! operations from N (ending at N for the last point).
//!
//! qcow2 (external snapshots): snapshot N is a new overlay on top of the chain,
//! `qemu-img create -f qcow2 -b q(N-1) -F qcow2 qN` (the create opens the whole chain);
//! deleting the newest snapshot merges the active overlay into it, `qemu-img commit -d qN`
//! then removes qN. Only the report points are timed; between them the chain is built with
//! -u (no chain open) and unwound with a plain remove, because a timed operation at depth
//! N costs seconds at N = 1000. A point whose time, extrapolated linearly from the
//! previous point, would exceed `QEMU_DEEP_OP` is reported as not attempted.

use super::{qemu_img_create, Case, Ctx, Instance, MIB};
use crate::bench::env;
use crate::bench::limits;
use crate::bench::results::{Curve, Kind};
use crate::bench::server::Engine;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SUITE: &str = "snapshots";
/// thinly operations per report point.
const WINDOW: u32 = 10;
/// qcow2 timed operations per report point below depth 1000 (one above).
const QCOW2_WINDOW: u32 = 3;

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &[Engine::Thinly, Engine::QemuQcow2]);
    let dir = ctx.ws.fresh_dir("snapshots")?;
    for engine in engines {
        let sub = dir.join(format!("{engine:?}"));
        std::fs::create_dir_all(&sub)?;
        let r = match engine {
            Engine::Thinly => thinly(ctx, &sub),
            _ => qcow2(ctx, &sub),
        };
        if let Err(e) = r {
            ctx.record_error(&Case::new(SUITE, "(run)"), engine, Kind::TimeMs, &format!("{e:#}"));
        }
        std::fs::remove_dir_all(&sub).ok();
    }
    Ok(())
}

fn case(op: &str, n: u32) -> Case {
    Case::at(SUITE, &format!("{op} snapshot"), "N =", n as f64)
}

/// The operations (1-based) whose times make up point `p` of a run of `max`.
fn window(p: u32, max: u32, w: u32) -> std::ops::RangeInclusive<u32> {
    if p + w - 1 > max {
        max.saturating_sub(w - 1).max(1)..=max
    } else {
        p..=p + w - 1
    }
}

fn thinly(ctx: &mut Ctx, dir: &Path) -> Result<()> {
    let max = ctx.cfg.snapshots_max;
    let size = ctx.cfg.cow_region_bytes;
    let mut inst = Instance::fresh(ctx, Engine::Thinly, dir, size)?;
    ctx.fill(SUITE, &mut inst, 0, size)?;
    let path = inst.server.control.clone().context("no control socket")?;
    // ONE connection for every operation.
    let mut control = crate::bench::control::Control::connect(&path)?;
    // A management operation commits: the fill's data is flushed before timing starts.
    control.create("warm-up", MIB)?;
    control.delete("warm-up")?;
    let mut create_ms = Vec::with_capacity(max as usize);
    for n in 1..=max {
        if n.is_multiple_of(250) {
            ctx.progress.step(&format!("snapshots: thinly create {n}/{max}"));
        }
        let t = Instant::now();
        control.snapshot("vol", &format!("vol-{n}"))?;
        create_ms.push(t.elapsed().as_secs_f64() * 1e3);
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
        for &p in &ctx.cfg.snapshot_points.clone() {
            for n in window(p.min(max), max, WINDOW) {
                ctx.time(&case(op, p), Engine::Thinly, times[n as usize - 1], Some(cmd.into()));
            }
        }
        ctx.results.curves.push(Curve {
            suite: SUITE.into(),
            name: format!("{op} snapshot"),
            engine: Engine::Thinly.label().into(),
            points: times.iter().enumerate().map(|(i, t)| [(i + 1) as f64, *t]).collect(),
        });
    }
    Ok(())
}

fn qcow2(ctx: &mut Ctx, dir: &Path) -> Result<()> {
    let max = ctx.cfg.snapshots_max;
    let size = ctx.cfg.cow_region_bytes;
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
    let mut skip_from = None; // first point not attempted
    let mut built = 0;
    for n in 1..=max {
        let point = point_of(n).filter(|p| skip_from.is_none_or(|s| *p < s));
        if n.is_multiple_of(250) {
            ctx.progress.step(&format!("snapshots: qcow2 chain {n}/{max}"));
        }
        let t = Instant::now();
        let file = dir.join(name(n));
        let cmd = match qemu_img_create(ctx.tools, &file, Some(&name(n - 1)), size, point.is_none())
        {
            Ok(cmd) => cmd,
            Err(e) if point.is_some() => {
                let p = point.unwrap_or(n);
                let why = format!("{e:#}");
                for op in ["create", "delete"] {
                    ctx.record_error(&case(op, p), Engine::QemuQcow2, Kind::TimeMs, &why);
                }
                std::fs::remove_file(&file).ok();
                skip_from = Some(p);
                break;
            }
            Err(e) => return Err(e),
        };
        built = n;
        if let Some(p) = point {
            let ms = t.elapsed().as_secs_f64() * 1e3;
            ctx.time(&case("create", p), Engine::QemuQcow2, ms, Some(cmd));
            // At the end of a window, look ahead: qemu-img opens the whole chain, so a
            // create is at least linear in N and was measured superlinear (5 s at N = 1000,
            // 39 s at N = 2000); extrapolate quadratically to the next point.
            let next = points.iter().copied().find(|q| *q > p && *q <= max);
            if let (Some(q), true) = (next, windows.iter().any(|(wp, w)| *wp == p && *w.end() == n))
            {
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
                        for op in ["create", "delete"] {
                            ctx.record_error(&case(op, *r), Engine::QemuQcow2, Kind::TimeMs, &why);
                        }
                    }
                    skip_from = Some(q);
                    break;
                }
            }
        }
    }
    let data = env::allocated_bytes(dir)?;
    ctx.results.space.push(crate::bench::results::SpaceRow {
        suite: SUITE.into(),
        engine: Engine::QemuQcow2.label().into(),
        written_bytes: written,
        data_bytes: data,
        metadata_bytes: None,
        note: format!("filled base and {built} overlays"),
    });
    let qemu_img = ctx.tools.qemu_img.clone().context("qemu-img is not installed")?;
    for n in (1..=built).rev() {
        let file = dir.join(name(n));
        if let Some(p) = point_of(n).filter(|p| skip_from.is_none_or(|s| *p < s)) {
            let mut cmd = Command::new(&qemu_img);
            cmd.args(["commit", "-q", "-d"]).arg(&file);
            let shown = format!("{cmd:?} && rm");
            let t = Instant::now();
            env::run_ok(&mut cmd, limits::QEMU_DEEP_OP)?;
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            ctx.time(
                &case("delete", p),
                Engine::QemuQcow2,
                t.elapsed().as_secs_f64() * 1e3,
                Some(shown),
            );
        } else {
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
    }
    Ok(())
}
