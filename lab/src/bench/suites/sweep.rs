//! `sweep`: the block-size trade-off researchers study. For each block size B (64 KiB,
//! 256 KiB, 1 MiB by default) thinly's pool uses data blocks of B and qcow2 clusters of B,
//! and each round measures, on a volume of 2 × R:
//!
//! ```text
//! [ S: filled, then snapshotted (shared) | F: never written ]
//! ```
//!
//! - first write into a shared block: one 4 KiB write per block of S, ascending
//!   (`--rw=write:(B-4K)`): each copies a whole block (thinly: copy-on-write break after a
//!   snapshot through the control socket; qcow2: a new overlay over the filled image);
//! - the same writes again (overwrite in place, the block is no longer shared);
//! - first write into a fresh block: one 4 KiB write per block of F (thinly zeroes the
//!   rest of a new block; qcow2 allocates a cluster and zero-fills it);
//!
//! and, after round 1, the space each engine uses for what the clients wrote.

use super::{qemu_img_create, size_label, Case, Ctx, Instance, KIB};
use crate::bench::fio::Job;
use crate::bench::limits;
use crate::bench::results::Kind;
use crate::bench::server::{Engine, Server};
use anyhow::{Context, Result};
use std::path::Path;

const SUITE: &str = "sweep";
pub const ENGINES: [Engine; 2] = [Engine::Thinly, Engine::QemuQcow2];
/// Measurements per engine, block size and round.
pub const CASES: u64 = 3;

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &ENGINES);
    for &bs in &ctx.cfg.sweep_block_sizes.clone() {
        for round in 0..ctx.cfg.repeat {
            for &engine in &engines {
                let dir = ctx.ws.fresh_dir(&format!("sweep-{engine:?}"))?;
                if let Err(e) = one(ctx, engine, &dir, bs, round) {
                    let c = Case::new(SUITE, format!("(server), block {}", size_label(bs)));
                    ctx.record_error(&c, engine, Kind::Io, &format!("round {}: {e:#}", round + 1));
                }
                std::fs::remove_dir_all(&dir).ok();
            }
        }
    }
    Ok(())
}

/// "WHAT, 256K blocks", a point of series WHAT at x = the block size in KiB.
fn case(what: &str, bs: u64) -> Case {
    let mut c = Case::new(SUITE, format!("{what}, {} blocks", size_label(bs)));
    c.series = Some((what.to_string(), (bs / KIB) as f64));
    c
}

/// One round of one engine at block size `bs`.
fn one(ctx: &mut Ctx, engine: Engine, dir: &Path, bs: u64, round: u32) -> Result<()> {
    let r = ctx.cfg.sweep_region_bytes.div_ceil(bs) * bs;
    let mut inst = start_shared(ctx, engine, dir, bs, r)?;
    let every_block = |off| {
        let rw =
            if bs > 4 * KIB { format!("write:{}k", (bs - 4 * KIB) / KIB) } else { "write".into() };
        Job::pass(&rw, 4 * KIB, 1, off, r, limits::FIO_PASS_MAX)
    };
    ctx.fio(&case("first write 4K qd1 into a shared block (CoW)", bs), &mut inst, &every_block(0));
    ctx.fio(
        &case("overwrite 4K qd1 (same offsets, no longer shared)", bs),
        &mut inst,
        &every_block(0),
    );
    ctx.fio(&case("first write 4K qd1 into a fresh block", bs), &mut inst, &every_block(r));
    if round == 0 {
        let suite = format!("sweep {}", size_label(bs));
        let note = format!("region of {} MiB filled and shared, one 4 KiB write per block twice, one 4 KiB write per fresh block", r >> 20);
        ctx.record_space(&suite, &mut inst, &note);
        if engine == Engine::QemuQcow2 {
            // The base and the overlay together hold what the clients wrote.
            let data = crate::bench::env::allocated_bytes(dir)?;
            if let Some(s) = ctx
                .results
                .space
                .iter_mut()
                .find(|s| s.suite == suite && s.engine == engine.label())
            {
                s.data_bytes = data;
            }
        }
    }
    Ok(())
}

/// An engine at block size `bs` serving a volume of 2 × `r` whose first `r` bytes are
/// filled and shared with a snapshot (thinly) or a backing image (qcow2).
fn start_shared(ctx: &mut Ctx, engine: Engine, dir: &Path, bs: u64, r: u64) -> Result<Instance> {
    let mut settings = ctx.cfg.pool.clone();
    settings.block_size_bytes = bs;
    if engine == Engine::Thinly {
        let mut inst = Instance::fresh_with(ctx, engine, dir, 2 * r, &settings, bs)?;
        ctx.fill(SUITE, &mut inst, 0, r)?;
        let control = inst.control.as_mut().context("thinly has no control connection")?;
        control.snapshot("vol", "vol-snap")?;
        return Ok(inst);
    }
    // qcow2: fill a base image of cluster size bs, then serve a new overlay on it.
    let mut base = Instance::fresh_with(ctx, engine, dir, 2 * r, &settings, bs)?;
    ctx.fill(SUITE, &mut base, 0, r)?;
    let written = base.written_bytes;
    drop(base);
    let overlay = dir.join("overlay.qcow2");
    let cmd = qemu_img_create(ctx.tools, &overlay, Some("disk.qcow2"), 2 * r, false, bs)?;
    ctx.results.server_command("qemu-img (sweep overlay)", &cmd);
    let server = Server::qemu_nbd(ctx.tools, ctx.ws, "qcow2", &overlay)?;
    let mut inst = Instance::new(engine, server, "bench", None, Some(overlay));
    inst.written_bytes = written;
    Ok(inst)
}
