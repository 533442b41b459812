//! `trace`: replays block traces (fio iolog v2; the two shipped in `lab/traces/` by
//! default, or any given in the configuration) against every engine. Each round gives each
//! engine a fresh image of the trace's size and replays the trace twice: on the fresh
//! image (its writes are first writes) and again (they are overwrites of provisioned
//! blocks). The trace's flushes are part of the timed replay. The headline is the I/Os
//! per second of the whole replay, reads and writes together. `--quick` replays only the
//! first `trace_max_ios` I/Os of each trace.

use super::{Case, Ctx, Instance};
use crate::bench::fio::Job;
use crate::bench::limits;
use crate::bench::results::Kind;
use crate::bench::server::Engine;
use crate::bench::traces;
use anyhow::Result;

const SUITE: &str = "trace";
pub const ENGINES: [Engine; 6] = [
    Engine::Thinly,
    Engine::ThinlyNull,
    Engine::QemuRaw,
    Engine::QemuQcow2,
    Engine::NbdkitFile,
    Engine::NbdkitNull,
];
/// Measurements per engine, trace and round.
pub const CASES: u64 = 2;

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &ENGINES);
    let dir = ctx.ws.fresh_dir("traces")?;
    let mut loaded = Vec::new();
    for t in &ctx.cfg.traces {
        match traces::resolve(t, &dir) {
            Ok((path, label)) => {
                let text = std::fs::read_to_string(&path)?;
                let size = traces::extent_bytes(&text).max(traces::TRACE_REGION_BYTES);
                loaded.push((path, label, size));
            }
            Err(e) => {
                let c = Case::new(SUITE, format!("trace {t}"));
                ctx.record_error(&c, Engine::Thinly, Kind::Io, &format!("{e:#}"));
            }
        }
    }
    for (path, label, size) in &loaded {
        for round in 0..ctx.cfg.repeat {
            for &engine in &engines {
                let sub = ctx.ws.fresh_dir(&format!("trace-{engine:?}"))?;
                let r = (|| -> Result<()> {
                    let mut inst = Instance::fresh(ctx, engine, &sub, *size)?;
                    let job = Job::replay(path, limits::FIO_PASS_MAX, ctx.cfg.trace_max_ios);
                    ctx.fio(&Case::new(SUITE, format!("{label}, fresh image")), &mut inst, &job);
                    ctx.fio(&Case::new(SUITE, format!("{label}, replayed again")), &mut inst, &job);
                    Ok(())
                })();
                if let Err(e) = r {
                    let c = Case::new(SUITE, format!("(server), {label}"));
                    ctx.record_error(&c, engine, Kind::Io, &format!("round {}: {e:#}", round + 1));
                }
                std::fs::remove_dir_all(&sub).ok();
            }
        }
    }
    Ok(())
}
