//! `depth`: random 4 KiB reads of data that lives at the bottom of a snapshot chain of
//! depth D. thinly: volume `vol` is filled, then `d1` = snapshot of `vol`, `d2` = snapshot
//! of `d1` … (through the control socket) and `dD` is read. qcow2: `disk.qcow2` is filled
//! through qemu-nbd, then `qD.qcow2` is backed by `q(D-1).qcow2` … by `disk.qcow2`
//! (`qemu-img create -f qcow2 -u -b PREV -F qcow2 NEXT`; -u only skips re-opening the
//! chain while building it) and qemu-nbd serves the top. Chains grow from one depth to the
//! next; at each depth the engines are interleaved in every round.

use super::{qemu_img_create, Case, Ctx, Instance, KIB};
use crate::bench::fio::Job;
use crate::bench::results::Kind;
use crate::bench::server::{Engine, Server};
use anyhow::{Context, Result};
use std::path::Path;

const SUITE: &str = "depth";
pub const ENGINES: [Engine; 2] = [Engine::Thinly, Engine::QemuQcow2];

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &ENGINES);
    let dir = ctx.ws.fresh_dir("depth")?;
    let size = ctx.cfg.depth_region_bytes;
    let mut thinly = None;
    let mut qcow2_ready = false;
    for &engine in &engines {
        let r = (|| -> Result<()> {
            let sub = dir.join(format!("{engine:?}"));
            std::fs::create_dir_all(&sub)?;
            let mut inst = Instance::fresh(ctx, engine, &sub, size)?;
            ctx.fill(SUITE, &mut inst, 0, size)?;
            if engine == Engine::Thinly {
                thinly = Some(inst);
            } else {
                ctx.record_space(SUITE, &mut inst, "the filled base image");
                qcow2_ready = true;
            }
            Ok(())
        })();
        if let Err(e) = r {
            ctx.record_error(&Case::new(SUITE, "(server)"), engine, Kind::Io, &format!("{e:#}"));
        }
    }
    let qdir = dir.join(format!("{:?}", Engine::QemuQcow2));
    let (mut thinly_depth, mut qcow2_depth) = (0u32, 0u32);
    for &depth in &ctx.cfg.depths.clone() {
        if let Some(inst) = thinly.as_mut() {
            if let Err(e) = grow_thinly(ctx, inst, &mut thinly_depth, depth) {
                ctx.record_error(
                    &Case::new(SUITE, "(chain)"),
                    Engine::Thinly,
                    Kind::Io,
                    &format!("{e:#}"),
                );
                thinly = None;
            }
        }
        if qcow2_ready {
            if let Err(e) = grow_qcow2(ctx, &qdir, &mut qcow2_depth, depth) {
                ctx.record_error(
                    &Case::new(SUITE, "(chain)"),
                    Engine::QemuQcow2,
                    Kind::Io,
                    &format!("{e:#}"),
                );
                qcow2_ready = false;
            }
        }
        for _round in 0..ctx.cfg.repeat {
            if let Some(inst) = thinly.as_mut() {
                measure(ctx, inst, depth);
            }
            if qcow2_ready {
                let top = qdir.join(top_name(depth));
                match Server::qemu_nbd(ctx.tools, ctx.ws, "qcow2", &top) {
                    Ok(server) => {
                        let mut inst =
                            Instance::new(Engine::QemuQcow2, server, "bench", None, None);
                        measure(ctx, &mut inst, depth);
                    }
                    Err(e) => {
                        let c = Case::new(SUITE, format!("(server), depth {depth}"));
                        ctx.record_error(&c, Engine::QemuQcow2, Kind::Io, &format!("{e:#}"));
                    }
                }
            }
        }
    }
    if let Some(mut inst) = thinly {
        ctx.record_space(SUITE, &mut inst, "filled volume and its snapshot chain");
    }
    if qcow2_ready {
        let mut total = 0;
        for e in std::fs::read_dir(&qdir)? {
            total += crate::bench::env::allocated_bytes(&e?.path())?;
        }
        if let Some(s) = ctx
            .results
            .space
            .iter_mut()
            .find(|s| s.suite == SUITE && s.engine == Engine::QemuQcow2.label())
        {
            s.data_bytes = total;
            s.note = "the filled base image and every overlay of the chain".into();
        }
    }
    Ok(())
}

fn measure(ctx: &mut Ctx, inst: &mut Instance, depth: u32) {
    let size = ctx.cfg.depth_region_bytes;
    for qd in [1, 32] {
        let c = Case::at(SUITE, &format!("rand read 4K qd{qd}"), "depth", depth as f64);
        let job = Job::timed("randread", 4 * KIB, qd, 0, size, ctx.cfg.ramp, ctx.cfg.runtime);
        ctx.fio(&c, inst, &job);
    }
}

fn grow_thinly(ctx: &mut Ctx, inst: &mut Instance, at: &mut u32, depth: u32) -> Result<()> {
    let control = inst.control.as_mut().context("thinly has no control connection")?;
    while *at < depth {
        let origin = if *at == 0 { "vol".to_string() } else { format!("d{at}") };
        let next = *at + 1;
        if next.is_multiple_of(100) {
            ctx.progress.step(&format!("depth: thinly snapshot chain {next}/{depth}"));
        }
        control.snapshot(&origin, &format!("d{next}"))?;
        *at = next;
    }
    inst.export = format!("d{depth}");
    Ok(())
}

fn top_name(depth: u32) -> String {
    if depth == 0 {
        "disk.qcow2".into()
    } else {
        format!("q{depth}.qcow2")
    }
}

fn grow_qcow2(ctx: &mut Ctx, dir: &Path, at: &mut u32, depth: u32) -> Result<()> {
    let size = ctx.cfg.depth_region_bytes;
    while *at < depth {
        let next = *at + 1;
        if next.is_multiple_of(100) {
            ctx.progress.step(&format!("depth: qcow2 backing chain {next}/{depth}"));
        }
        let cmd = qemu_img_create(
            ctx.tools,
            &dir.join(top_name(next)),
            Some(&top_name(*at)),
            size,
            true,
            ctx.cfg.qcow2_cluster_bytes,
        )?;
        if next == 1 {
            ctx.results.server_command("qemu-img (depth chain)", &cmd);
        }
        *at = next;
    }
    Ok(())
}
