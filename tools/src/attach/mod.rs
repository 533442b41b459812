//! `thinly attach` / `thinly detach`: a volume as a local block device. Attachment is a
//! client-side concern: the volume must be served by a running `thinly serve` for the pool
//! (attach connects to `<pool>/nbd.sock` and refuses, naming the command to run, when
//! nobody listens there; it does not start a server, whose lifetime belongs to the user).
//!
//! Contracts:
//! - attach prints the device path and records the attachment in
//!   `<pool>/attachments.json` (`records`); a failed attach leaves nothing behind;
//! - detach refuses a device that is open exclusively (mounted, or held by another
//!   holder) and leaves it attached; otherwise it flushes every write to the server
//!   before taking anything down, and refuses (leaving the attachment as it was) when the
//!   flush fails, unless `--force` says the unflushed writes may be dropped (a dead
//!   server: nothing more can reach it);
//! - `list` and `status` show the records (`annotate`).
//!
//! Paths (`--via`, default `auto`): the kernel's NBD client when the `nbd` module is loaded
//! or loadable (`kernel_nbd`), else FUSE and a loop device (`fuse_loop`), which works on any
//! host with FUSE, loop devices and libnbd's `nbdfuse`.

pub mod fuse_loop;
pub mod kernel_nbd;
pub mod limits;
pub mod records;

use crate::pool::control::{self, Request};
use crate::pool::serve::NBD_SOCKET;
use anyhow::{bail, Context, Result};
use records::{AttachPath, Attachment, Records};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The volume to attach.
    pub volume: String,
    /// Attach read-only (the device refuses writes).
    #[arg(long)]
    pub read_only: bool,
    /// How to attach: `kernel-nbd` (/dev/nbdN), `fuse-loop` (nbdfuse + a loop device), or
    /// `auto` (the kernel's NBD client when the nbd module is there, else fuse-loop).
    #[arg(long, value_parser = ["auto", "kernel-nbd", "fuse-loop"], default_value = "auto")]
    pub via: String,
    /// Internal: the supervising process of a kernel NBD attachment, for DEVICE.
    #[arg(long, hide = true, value_name = "DEVICE")]
    pub nbd_supervise: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub pool: crate::pool::PoolArgs,
}

#[derive(Debug, clap::Args)]
pub struct DetachArgs {
    /// The volume name, or the device attach printed.
    pub target: String,
    /// Detach even when the final flush fails (the server is gone): writes not yet flushed
    /// are lost.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub pool: crate::pool::PoolArgs,
}

/// `thinly attach`: prints the device.
pub fn run_attach(a: &AttachArgs) -> Result<()> {
    let dir = a.pool.dir();
    let dir = dir.canonicalize().with_context(|| format!("no pool in {}", dir.display()))?;
    if let Some(device) = &a.nbd_supervise {
        return kernel_nbd::supervise(&dir.join(NBD_SOCKET), &a.volume, device, a.read_only);
    }
    let mut records = Records::lock(&dir)?;
    if let Some(old) = records.list.iter().find(|r| r.volume == a.volume) {
        bail!("{} is already attached as {}", a.volume, old.device.display());
    }
    let socket = dir.join(NBD_SOCKET);
    if UnixStream::connect(&socket).is_err() {
        bail!(
            "no `thinly serve` is running for the pool {0} (nobody listens on {1}); start one \
             with `thinly serve --pool {0}` and attach again",
            dir.display(),
            socket.display()
        );
    }
    let pool_read_only = volume_read_only(&dir, &a.volume)?;
    let read_only = a.read_only || pool_read_only;
    let kernel = match a.via.as_str() {
        "kernel-nbd" => true,
        "fuse-loop" => false,
        _ => kernel_nbd::available(),
    };
    let attachment = if kernel {
        kernel_nbd::attach(&dir, &a.volume, read_only)?
    } else {
        fuse_loop::attach(&dir, &socket, &a.volume, read_only)?
    };
    records.list.push(attachment.clone());
    if let Err(e) = records.save() {
        let _ = teardown(&attachment);
        return Err(e.context("recording the attachment"));
    }
    println!("{}", attachment.device.display());
    Ok(())
}

/// Whether the served pool has `volume`, and whether it is exported read-only.
fn volume_read_only(dir: &Path, volume: &str) -> Result<bool> {
    let r = control::send(dir, &Request::List)
        .context("the server does not answer on its control socket")?
        .context("asking the server for its volumes")?;
    let vols = r.result.as_array().context("the server's volume list is not a list")?;
    let v = vols
        .iter()
        .find(|v| v["name"].as_str() == Some(volume))
        .with_context(|| format!("the pool in {} has no volume {volume}", dir.display()))?;
    Ok(v["read_only"].as_bool().unwrap_or(false))
}

/// `thinly detach`.
pub fn run_detach(a: &DetachArgs) -> Result<()> {
    let dir = a.pool.dir();
    let dir = dir.canonicalize().with_context(|| format!("no pool in {}", dir.display()))?;
    let mut records = Records::lock(&dir)?;
    let device = Path::new(&a.target).canonicalize().ok();
    let Some(i) = records
        .list
        .iter()
        .position(|r| r.volume == a.target || Some(&r.device) == device.as_ref())
    else {
        bail!("{} is not attached from the pool {}", a.target, dir.display());
    };
    let att = records.list[i].clone();
    refuse_if_busy(&att)?;
    if let Err(e) = flush(&att) {
        if !a.force {
            return Err(e.context(format!(
                "flushing {} to the server failed; nothing was detached (--force detaches \
                 anyway, losing writes that were not flushed)",
                att.volume
            )));
        }
        eprintln!("thinly: warning: {e:#}; detaching anyway (--force)");
    }
    teardown(&att)?;
    records.list.remove(i);
    records.save()
}

fn flush(a: &Attachment) -> Result<()> {
    match a.path {
        AttachPath::FuseLoop => fuse_loop::flush(a),
        AttachPath::KernelNbd => {
            let f = std::fs::File::open(&a.device)
                .with_context(|| format!("opening {}", a.device.display()))?;
            f.sync_all().with_context(|| format!("flushing {}", a.device.display()))
        }
    }
}

fn teardown(a: &Attachment) -> Result<()> {
    match a.path {
        AttachPath::FuseLoop => fuse_loop::teardown(a),
        AttachPath::KernelNbd => kernel_nbd::teardown(a),
    }
}

/// True while the device is still set up for this attachment.
fn still_attached(a: &Attachment) -> bool {
    match a.path {
        AttachPath::FuseLoop => fuse_loop::loop_backing_file(&a.device).as_ref() == Some(&a.file),
        AttachPath::KernelNbd => kernel_nbd::device_pid(&a.device).is_some(),
    }
}

/// Refuses to detach a device that someone holds: opening a block device with O_EXCL
/// fails with EBUSY while it is mounted or otherwise claimed.
fn refuse_if_busy(att: &Attachment) -> Result<()> {
    if !still_attached(att) {
        return Ok(()); // the device is already gone (an interrupted detach)
    }
    match std::fs::File::options().read(true).custom_flags(nix::libc::O_EXCL).open(&att.device) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => bail!(
            "{} ({}) is in use (mounted?); unmount it first",
            att.device.display(),
            att.volume
        ),
        Err(e) => Err(e).context(format!("opening {}", att.device.display())),
    }
}

/// Adds `"attached": DEVICE|null` to every volume of a `list`/`status` result.
pub fn annotate(dir: &Path, volumes: &mut serde_json::Value) {
    let list = records::read(dir).unwrap_or_default();
    if let Some(vols) = volumes.as_array_mut() {
        for v in vols {
            let dev = list
                .iter()
                .find(|a| v["name"].as_str() == Some(a.volume.as_str()))
                .map(|a| a.device.display().to_string());
            v["attached"] = dev.map_or(serde_json::Value::Null, serde_json::Value::String);
        }
    }
}

/// The human table of attachments (empty when there are none).
pub fn table(dir: &Path) -> String {
    let list = records::read(dir).unwrap_or_default();
    if list.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{:<24} {:<14} {:<10} {}\n", "ATTACHED", "DEVICE", "PATH", "RO");
    for a in list {
        out.push_str(&format!(
            "{:<24} {:<14} {:<10} {}\n",
            a.volume,
            a.device.display(),
            match a.path {
                AttachPath::FuseLoop => "fuse-loop",
                AttachPath::KernelNbd => "kernel-nbd",
            },
            if a.read_only { "yes" } else { "no" }
        ));
    }
    out.trim_end().to_string()
}
