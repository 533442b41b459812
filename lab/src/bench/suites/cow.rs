//! `cow`: first writes to blocks shared with a snapshot (copy-on-write breaks), then the
//! same writes again (overwrite in place), for 4 KiB and whole-block (64 KiB) writes at
//! queue depth 1 and 32. Every write of a pass lands in a different 64 KiB block, in
//! ascending order: 4 KiB writes use fio's `--rw=write:60k` (4 KiB written, 60 KiB
//! skipped), 64 KiB writes `--rw=write`.
//!
//! thinly: volume `vol` is filled once; before each case a new snapshot of `vol` is taken
//! (through the control socket), so every block of `vol` is shared again. qcow2: the filled
//! `disk.qcow2` is the snapshot; each case writes to a new overlay backed by it (qcow2's
//! external snapshot). qemu-nbd on a filled raw file gives the overwrite baseline.

use super::{qemu_img_create, size_label, Case, Ctx, Instance, KIB};
use crate::bench::fio::Job;
use crate::bench::limits;
use crate::bench::results::Kind;
use crate::bench::server::{Engine, Server};
use anyhow::{Context, Result};
use std::path::Path;

const SUITE: &str = "cow";
pub const ENGINES: [Engine; 3] = [Engine::Thinly, Engine::QemuQcow2, Engine::QemuRaw];
/// Measurements per engine and round (first writes and overwrites).
pub const CASES: u64 = 8;
const SIZES: [(u64, u32); 4] = [(4 * KIB, 1), (4 * KIB, 32), (64 * KIB, 1), (64 * KIB, 32)];

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &ENGINES);
    let dir = ctx.ws.fresh_dir("cow")?;
    let size = ctx.cfg.cow_region_bytes;
    // The filled bases: thinly keeps serving; qcow2's and raw's servers stop after the fill.
    let mut thinly = None;
    let mut ready = Vec::new();
    for &engine in &engines {
        let sub = dir.join(format!("{engine:?}"));
        let r = (|| -> Result<Option<Instance>> {
            std::fs::create_dir_all(&sub)?;
            let mut inst = Instance::fresh(ctx, engine, &sub, size)?;
            ctx.fill(SUITE, &mut inst, 0, size)?;
            Ok(Some(inst))
        })();
        match r {
            Ok(Some(inst)) if engine == Engine::Thinly => thinly = Some(inst),
            Ok(Some(mut inst)) => {
                ctx.record_space(SUITE, &mut inst, "");
                ready.push((engine, inst.written_bytes));
            }
            Ok(None) => {}
            Err(e) => {
                ctx.record_error(&Case::new(SUITE, "(server)"), engine, Kind::Io, &format!("{e:#}"))
            }
        }
    }
    let mut written = std::collections::BTreeMap::new();
    for round in 0..ctx.cfg.repeat {
        for (bs, qd) in SIZES {
            if let Some(inst) = thinly.as_mut() {
                let snap = format!("vol-snap-{round}-{}-{qd}", size_label(bs));
                match inst
                    .control
                    .as_mut()
                    .context("no control connection")
                    .and_then(|c| c.snapshot("vol", &snap))
                {
                    Ok(()) => passes(ctx, inst, bs, qd, true),
                    Err(e) => ctx.record_error(
                        &first_case(bs, qd),
                        Engine::Thinly,
                        Kind::Io,
                        &format!("{e:#}"),
                    ),
                }
            }
            for &(engine, _) in &ready {
                let sub = dir.join(format!("{engine:?}"));
                let r = overlay_round(ctx, engine, &sub, round, bs, qd);
                match r {
                    Ok(w) => *written.entry(engine).or_insert(0u64) += w,
                    Err(e) => {
                        ctx.record_error(&first_case(bs, qd), engine, Kind::Io, &format!("{e:#}"))
                    }
                }
            }
        }
    }
    if let Some(mut inst) = thinly {
        ctx.record_space(
            SUITE,
            &mut inst,
            "filled volume, a snapshot per case, every block of it rewritten after each",
        );
    }
    for (engine, fill_bytes) in ready {
        let sub = dir.join(format!("{engine:?}"));
        let data = crate::bench::env::allocated_bytes(&sub)?;
        if let Some(s) =
            ctx.results.space.iter_mut().find(|s| s.suite == SUITE && s.engine == engine.label())
        {
            s.data_bytes = data;
            s.written_bytes = fill_bytes + written.get(&engine).copied().unwrap_or(0);
            s.note = if engine == Engine::QemuQcow2 {
                "filled base and an overlay per case".into()
            } else {
                "the filled file, overwritten in place".into()
            };
        }
    }
    Ok(())
}

/// One case on qemu-nbd: a new overlay on the qcow2 base, or the raw file itself.
fn overlay_round(
    ctx: &mut Ctx,
    engine: Engine,
    dir: &Path,
    round: u32,
    bs: u64,
    qd: u32,
) -> Result<u64> {
    let (format, file, shared) = if engine == Engine::QemuQcow2 {
        let ov = dir.join(format!("overlay-{round}-{}-{qd}.qcow2", size_label(bs)));
        let cmd = qemu_img_create(
            ctx.tools,
            &ov,
            Some("disk.qcow2"),
            ctx.cfg.cow_region_bytes,
            false,
            ctx.cfg.qcow2_cluster_bytes,
        )?;
        ctx.results.server_command("qemu-img (cow overlay)", &cmd);
        ("qcow2", ov, true)
    } else {
        ("raw", dir.join("disk.raw"), false)
    };
    let server = Server::qemu_nbd(ctx.tools, ctx.ws, format, &file)?;
    let mut inst = Instance::new(engine, server, "bench", None, None);
    passes(ctx, &mut inst, bs, qd, shared);
    Ok(inst.written_bytes)
}

/// The first pass (COW breaks when `shared`) and the second (overwrite in place).
fn passes(ctx: &mut Ctx, inst: &mut Instance, bs: u64, qd: u32, shared: bool) {
    let size = ctx.cfg.cow_region_bytes;
    let rw =
        if bs < 64 * KIB { format!("write:{}k", (64 * KIB - bs) / KIB) } else { "write".into() };
    let job = Job::pass(&rw, bs, qd, 0, size, limits::FIO_PASS_MAX);
    if shared {
        ctx.fio(&first_case(bs, qd), inst, &job);
    }
    let c = Case::new(SUITE, format!("overwrite {} qd{qd}", size_label(bs)));
    ctx.fio(&c, inst, &job);
}

fn first_case(bs: u64, qd: u32) -> Case {
    Case::new(SUITE, format!("first write {} qd{qd} (shared block)", size_label(bs)))
}
