//! Path B of `thinly attach`: for hosts without the kernel's NBD driver. `nbdfuse` (libnbd)
//! connects to the server's unix socket and exposes the export as one file in a FUSE mount
//! under `<pool>/attach/<volume>/`; `losetup --direct-io=on` puts a loop device on that
//! file. With direct I/O the loop driver keeps no second page cache of the file, so a
//! flush of the loop device (what a filesystem's journal commit or fsync sends) reaches
//! nbdfuse as an fsync, which it forwards as an NBD FLUSH, which the server answers only
//! after a commit. When the server goes away, libnbd fails every request on the dead
//! connection and the loop device returns EIO: I/O fails, it does not hang.
//!
//! Every step that fails undoes the steps before it, so a failed attach leaves no mount,
//! no loop device and no helper behind.

use super::limits::{
    HELPER_EXIT_TIMEOUT, HELPER_READY_TIMEOUT, LOOP_RELEASE_TIMEOUT, POLL_STEP, UNMOUNT_TIMEOUT,
};
use super::records::{AttachPath, Attachment};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Attaches `volume` of the pool in `dir`, served on the unix socket `socket`.
pub fn attach(dir: &Path, socket: &Path, volume: &str, read_only: bool) -> Result<Attachment> {
    let base = dir.join("attach");
    let mountpoint = base.join(volume);
    std::fs::create_dir_all(&mountpoint)
        .with_context(|| format!("creating the mount point {}", mountpoint.display()))?;
    let file = mountpoint.join(volume);
    let helper_pid = match start_helper(&base, &mountpoint, socket, volume, read_only) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::remove_dir(&mountpoint);
            return Err(e);
        }
    };
    let mut losetup = Command::new("losetup");
    losetup.args(["--direct-io=on", "--show", "-f"]);
    if read_only {
        losetup.arg("-r");
    }
    let device = match output_line(losetup.arg(&file)) {
        Ok(dev) => PathBuf::from(dev),
        Err(e) => {
            let _ = stop_helper(&mountpoint, helper_pid);
            let _ = std::fs::remove_dir(&mountpoint);
            return Err(e.context(format!("setting up a loop device on {}", file.display())));
        }
    };
    let path = AttachPath::FuseLoop;
    Ok(Attachment { volume: volume.into(), device, path, read_only, mountpoint, file, helper_pid })
}

/// Starts nbdfuse in its own process group (a Ctrl-C at the terminal that ran attach must
/// not stop it) and waits until it has mounted; returns its pid.
fn start_helper(
    base: &Path,
    mountpoint: &Path,
    socket: &Path,
    volume: &str,
    read_only: bool,
) -> Result<i32> {
    let pidfile = base.join(format!("{volume}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let log = std::fs::File::create(base.join(format!("{volume}.log")))?;
    let uri = format!("nbd+unix:///{}?socket={}", uri_escape(volume), uri_escape_path(socket)?);
    let mut cmd = Command::new("nbdfuse");
    cmd.arg("-P").arg(&pidfile);
    if read_only {
        cmd.arg("-r");
    }
    cmd.arg(mountpoint.join(volume)).arg(&uri);
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
    let mut child = cmd.spawn().context("starting nbdfuse (package libnbd-bin)")?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let why =
                std::fs::read_to_string(base.join(format!("{volume}.log"))).unwrap_or_default();
            bail!("nbdfuse exited ({status}) before mounting: {}", why.trim());
        }
        if std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok()) {
            let _ = std::fs::remove_file(&pidfile);
            // nbdfuse stays in the foreground: the child is the helper.
            return i32::try_from(child.id()).context("helper pid out of range");
        }
        if start.elapsed() > HELPER_READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = unmount(mountpoint);
            bail!("nbdfuse did not mount {} in {HELPER_READY_TIMEOUT:?}", mountpoint.display());
        }
        std::thread::sleep(POLL_STEP);
    }
}

/// Sends the volume's unflushed writes to the server: fsync of the loop device (its dirty
/// pages, if anyone wrote it without direct I/O), then of the FUSE file (nbdfuse turns it
/// into an NBD FLUSH, which the server acknowledges after a commit).
pub fn flush(a: &Attachment) -> Result<()> {
    for path in [&a.device, &a.file] {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.sync_all().with_context(|| format!("flushing {}", path.display()))?;
    }
    Ok(())
}

/// Takes the attachment down: loop device, FUSE mount, helper. Each step tolerates that
/// an earlier (interrupted) detach already did it.
pub fn teardown(a: &Attachment) -> Result<()> {
    if loop_backing_file(&a.device).is_some_and(|f| f == a.file) {
        let out = Command::new("losetup").arg("-d").arg(&a.device).output()?;
        if !out.status.success() {
            bail!("losetup -d {}: {}", a.device.display(), String::from_utf8_lossy(&out.stderr));
        }
        wait_for(LOOP_RELEASE_TIMEOUT, || loop_backing_file(&a.device).as_ref() != Some(&a.file))
            .with_context(|| format!("{} kept its backing file", a.device.display()))?;
    }
    stop_helper(&a.mountpoint, a.helper_pid)?;
    let _ = std::fs::remove_dir(&a.mountpoint);
    Ok(())
}

/// Unmounts the FUSE mount (retrying while busy) and waits for the helper to exit.
fn stop_helper(mountpoint: &Path, pid: i32) -> Result<()> {
    if is_mountpoint(mountpoint) {
        wait_for(UNMOUNT_TIMEOUT, || unmount(mountpoint).is_ok())
            .with_context(|| format!("unmounting {}", mountpoint.display()))?;
    }
    let pid = Pid::from_raw(pid);
    if wait_for(HELPER_EXIT_TIMEOUT, || !helper_alive(pid)).is_err() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    Ok(())
}

/// True while `pid` is nbdfuse (a reused pid of another program is left alone).
fn helper_alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "nbdfuse")
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

fn unmount(mountpoint: &Path) -> Result<()> {
    let out = Command::new("umount").arg(mountpoint).output().context("running umount")?;
    if !out.status.success() {
        bail!("umount {}: {}", mountpoint.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// True when `path` is the root of a mount (its device differs from its parent's).
pub fn is_mountpoint(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(path) = path.canonicalize() else { return false };
    let Some(path) = path.to_str() else { return false };
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// The backing file of a loop device, from sysfs; `None` when it has none.
pub fn loop_backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let s = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim_end_matches('\n')))
}

fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("gave up after {limit:?}");
        }
        std::thread::sleep(POLL_STEP);
    }
    Ok(())
}

fn output_line(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn uri_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn uri_escape_path(p: &Path) -> Result<String> {
    let abs = std::path::absolute(p)?;
    let s = abs.to_str().with_context(|| format!("{} is not UTF-8", abs.display()))?;
    Ok(s.split('/').map(uri_escape).collect::<Vec<_>>().join("/"))
}
