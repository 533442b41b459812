//! `basic`: 4 KiB random reads and writes at queue depth 1 and 32, and 1 MiB sequential
//! reads and writes, on provisioned blocks and on fresh (never written) blocks, for every
//! engine. Each round gives each engine a new image laid out as
//!
//! ```text
//! [ P: provisioned region | Z: never written | F1: fresh, qd1 writes | F2: fresh, qd32 writes ]
//! ```
//!
//! P is filled first by a sequential 1 MiB pass (that pass is "seq write, fresh"); reads of
//! Z are reads of unprovisioned blocks; random writes to F1/F2 are one pass of 4 KiB writes
//! in random order (each 4 KiB once), stopped after the runtime, so they are first writes.
//!
//! Every write case says whether its flush is timed. The plain cases leave it out of the
//! timed run (the harness flushes after it, untimed); the durability cases time it: 4 KiB
//! random overwrites with a FLUSH after every write (`fsync=1`, qd1) or every 32 writes
//! (`fsync=32`, qd32), and a 1 MiB sequential overwrite ending in one FLUSH
//! (`end_fsync=1`). thinly's null export is its transport ceiling, nbdkit null a peer's
//! transport; neither stores anything, so neither is a peer in the ratios.

use super::{size_label, Case, Ctx, Instance, KIB, MIB, SEQ_QD};
use crate::bench::fio::{Flush, Job};
use crate::bench::results::Kind;
use crate::bench::server::Engine;
use anyhow::Result;

const SUITE: &str = "basic";
pub const ENGINES: [Engine; 6] = [
    Engine::Thinly,
    Engine::ThinlyNull,
    Engine::QemuRaw,
    Engine::QemuQcow2,
    Engine::NbdkitFile,
    Engine::NbdkitNull,
];
/// Measurements per engine and round.
pub const CASES: u64 = 15;

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &ENGINES);
    for round in 0..ctx.cfg.repeat {
        for &engine in &engines {
            let dir = ctx.ws.fresh_dir(&format!("basic-{engine:?}"))?;
            if let Err(e) = run_round(ctx, engine, &dir, round) {
                let case = Case::new(SUITE, "(server)");
                ctx.record_error(&case, engine, Kind::Io, &format!("round {}: {e:#}", round + 1));
            }
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    Ok(())
}

fn run_round(ctx: &mut Ctx, engine: Engine, dir: &std::path::Path, round: u32) -> Result<()> {
    let (p, f) = (ctx.cfg.region_bytes, ctx.cfg.fresh_bytes);
    let (z_off, f1_off, f2_off) = (p, p + f, p + 2 * f);
    let mut inst = Instance::fresh(ctx, engine, dir, p + 3 * f)?;
    let (ramp, rt) = (ctx.cfg.ramp, ctx.cfg.runtime);
    let seq = |rw: &str, off, size| Job::timed(rw, MIB, SEQ_QD, off, size, ramp, rt);
    let rand = |rw: &str, qd, off, size| Job::timed(rw, 4 * KIB, qd, off, size, ramp, rt);

    // Fresh blocks first, while they are fresh.
    let fill = Job::pass("write", MIB, SEQ_QD, 0, p, crate::bench::limits::FIO_PASS_MAX);
    ctx.fio(&case("seq write", MIB, SEQ_QD, "fresh"), &mut inst, &fill);
    for qd in [1, 32] {
        ctx.fio(
            &case("rand read", 4 * KIB, qd, "fresh"),
            &mut inst,
            &rand("randread", qd, z_off, f),
        );
    }
    ctx.fio(&case("seq read", MIB, SEQ_QD, "fresh"), &mut inst, &seq("read", z_off, f));
    for (qd, off) in [(1, f1_off), (32, f2_off)] {
        let job = Job::pass("randwrite", 4 * KIB, qd, off, f, ramp + rt);
        ctx.fio(&case("rand write", 4 * KIB, qd, "fresh"), &mut inst, &job);
    }
    // Then the provisioned region P.
    for qd in [1, 32] {
        ctx.fio(
            &case("rand read", 4 * KIB, qd, "provisioned"),
            &mut inst,
            &rand("randread", qd, 0, p),
        );
    }
    for qd in [1, 32] {
        let c = case("rand write", 4 * KIB, qd, "provisioned");
        ctx.fio(&c, &mut inst, &rand("randwrite", qd, 0, p));
    }
    ctx.fio(&case("seq read", MIB, SEQ_QD, "provisioned"), &mut inst, &seq("read", 0, p));
    ctx.fio(&case("seq write", MIB, SEQ_QD, "provisioned"), &mut inst, &seq("write", 0, p));
    // Durability: the flushes inside the timed run.
    for (qd, every) in [(1, 1), (32, 32)] {
        let c = case("rand write", 4 * KIB, qd, &format!("provisioned, fsync={every}"));
        ctx.fio(&c, &mut inst, &rand("randwrite", qd, 0, p).with_flush(Flush::EveryN(every)));
    }
    let end = Job::pass("write", MIB, SEQ_QD, 0, p, crate::bench::limits::FIO_PASS_MAX);
    let c = case("seq write", MIB, SEQ_QD, "provisioned, end_fsync=1");
    ctx.fio(&c, &mut inst, &end.with_flush(Flush::AtEnd));
    if round == 0 {
        ctx.record_space(
            SUITE,
            &mut inst,
            "one round: fill of P, first writes to F1/F2, overwrites of P",
        );
    }
    Ok(())
}

fn case(what: &str, bs: u64, qd: u32, blocks: &str) -> Case {
    Case::new(SUITE, format!("{what} {} qd{qd}, {blocks}", size_label(bs)))
}
