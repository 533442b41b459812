//! `tls`: what TLS costs. thinly and qemu-nbd (raw file) each serve a fresh image on
//! loopback TCP twice — plain, then with STARTTLS and X.509 certificates the suite makes
//! with `openssl` (qemu-nbd through `--object tls-creds-x509`) — and fio's nbd engine runs
//! the same cases on each: a 1 MiB sequential fill, 4 KiB random reads and writes at queue
//! depth 1 and 32 over the filled region, and 1 MiB sequential reads and writes. The report
//! gives the TLS / TCP ratio of each case per engine. Neither transport is settled
//! (flushed) between cases, so both see the same write-back.

use super::{size_label, sparse_file, Case, Ctx, Instance, KIB, MIB, SEQ_QD};
use crate::bench::control::Control;
use crate::bench::env::{self, which};
use crate::bench::fio::Job;
use crate::bench::limits;
use crate::bench::results::Kind;
use crate::bench::server::{Engine, Net, Server};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const SUITE: &str = "tls";
const ENGINES: [Engine; 2] = [Engine::Thinly, Engine::QemuRaw];
/// The two transports, as the case names end.
pub const TRANSPORTS: [&str; 2] = ["tcp", "tls"];

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let engines = ctx.available(SUITE, &ENGINES);
    let certs = ctx.ws.fresh_dir("tls-certs")?;
    let dirs = match make_certificates(&certs) {
        Ok(d) => d,
        Err(e) => {
            for &engine in &engines {
                let msg = format!("no certificates: {e:#}");
                ctx.record_error(&Case::new(SUITE, "(server)"), engine, Kind::Io, &msg);
            }
            return Ok(());
        }
    };
    for round in 0..ctx.cfg.repeat {
        for &engine in &engines {
            for transport in TRANSPORTS {
                let tls = (transport == "tls").then(|| dirs.clone());
                let dir = ctx.ws.fresh_dir(&format!("tls-{engine:?}-{transport}"))?;
                if let Err(e) = run_round(ctx, engine, &dir, tls, transport) {
                    let case = Case::new(SUITE, format!("(server, {transport})"));
                    let msg = format!("round {}: {e:#}", round + 1);
                    ctx.record_error(&case, engine, Kind::Io, &msg);
                }
                std::fs::remove_dir_all(&dir).ok();
            }
        }
    }
    Ok(())
}

fn case(op: &str, bs: u64, qd: u32, transport: &str) -> Case {
    Case::new(SUITE, format!("{op} {} qd{qd}, {transport}", size_label(bs)))
}

fn run_round(
    ctx: &mut Ctx,
    engine: Engine,
    dir: &Path,
    tls: Option<(PathBuf, PathBuf)>,
    transport: &str,
) -> Result<()> {
    let p = ctx.cfg.region_bytes;
    let net = Net::loopback(tls)?;
    let mut inst = start(ctx, engine, dir, p, &net)?;
    let (ramp, rt) = (ctx.cfg.ramp, ctx.cfg.runtime);
    let fill = Job::pass("write", MIB, SEQ_QD, 0, p, limits::FIO_PASS_MAX);
    ctx.fio(&case("seq write fill", MIB, SEQ_QD, transport), &mut inst, &fill);
    for (rw, op) in [("randread", "rand read"), ("randwrite", "rand write")] {
        for qd in [1, 32] {
            let job = Job::timed(rw, 4 * KIB, qd, 0, p, ramp, rt);
            ctx.fio(&case(op, 4 * KIB, qd, transport), &mut inst, &job);
        }
    }
    for (rw, op) in [("read", "seq read"), ("write", "seq write")] {
        let job = Job::timed(rw, MIB, SEQ_QD, 0, p, ramp, rt);
        ctx.fio(&case(op, MIB, SEQ_QD, transport), &mut inst, &job);
    }
    Ok(())
}

/// `engine` serving a fresh image of `size_bytes` on `net`.
fn start(
    ctx: &mut Ctx,
    engine: Engine,
    dir: &Path,
    size_bytes: u64,
    net: &Net,
) -> Result<Instance> {
    ctx.progress.step(&format!("starting {} on tcp {}", engine.label(), net.port));
    let inst = match engine {
        Engine::Thinly => {
            let pool = dir.join("pool");
            let settings = ctx.cfg.pool.clone();
            let server = Server::thinly_on(ctx.tools, ctx.ws, &pool, &settings, Some(net))?;
            let mut control =
                Control::connect(server.control.as_deref().context("no control socket")?)?;
            control.create("vol", size_bytes)?;
            Instance::new(engine, server, "vol", Some(control), Some(pool))
        }
        _ => {
            let file = dir.join("disk.raw");
            sparse_file(&file, size_bytes)?;
            let server = Server::qemu_nbd_on(ctx.tools, ctx.ws, "raw", &file, Some(net))?;
            Instance::new(engine, server, "bench", None, Some(file))
        }
    };
    ctx.results.server_command(engine.label(), &inst.server.command);
    Ok(inst)
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with `openssl` under
/// `root`: the server directory (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`) and a
/// client HOME with `.pki/libnbd/ca-cert.pem`; returns (server dir, client HOME).
fn make_certificates(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let openssl = which("openssl").context("openssl is not installed")?;
    let (server, home) = (root.join("server"), root.join("client-home"));
    let client = home.join(".pki/libnbd");
    for d in [&server, &client] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let ext = root.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .context("writing the certificate extensions")?;
    let (ca_key, ca_cert, csr) =
        (root.join("ca-key.pem"), server.join("ca-cert.pem"), root.join("server.csr"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<std::ffi::OsString>; 3] = [
        args(&["req", "-x509"], &ec, &["-days", "2", "-subj", "/CN=thinly bench CA"])
            .chain(paths(&[("-keyout", &ca_key), ("-out", &ca_cert)]))
            .collect(),
        args(&["req", "-new"], &ec, &["-subj", "/CN=127.0.0.1"])
            .chain(paths(&[("-keyout", &server.join("server-key.pem")), ("-out", &csr)]))
            .collect(),
        args(&["x509", "-req", "-CAcreateserial", "-days", "2"], &[], &[])
            .chain(paths(&[("-in", &csr), ("-CA", &ca_cert), ("-CAkey", &ca_key)]))
            .chain(paths(&[("-extfile", &ext), ("-out", &server.join("server-cert.pem"))]))
            .collect(),
    ];
    for step in steps {
        let mut cmd = Command::new(&openssl);
        cmd.args(step);
        env::run_ok(&mut cmd, limits::TOOL_SHORT).context("making the certificates")?;
    }
    std::fs::copy(&ca_cert, client.join("ca-cert.pem")).context("copying the CA certificate")?;
    Ok((server, home))
}

fn args<'a>(
    a: &'a [&str],
    b: &'a [&str],
    c: &'a [&str],
) -> impl Iterator<Item = std::ffi::OsString> + 'a {
    a.iter().chain(b).chain(c).map(std::ffi::OsString::from)
}

fn paths<'a>(pairs: &'a [(&str, &PathBuf)]) -> impl Iterator<Item = std::ffi::OsString> + 'a {
    pairs.iter().flat_map(|(flag, p)| [std::ffi::OsString::from(flag), p.as_os_str().to_owned()])
}
