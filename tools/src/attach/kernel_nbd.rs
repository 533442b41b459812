//! Path A of `thinly attach`: the kernel's NBD client (`/dev/nbdN`), for hosts where the
//! `nbd` module is loaded or loadable. A supervising process (`thinly attach
//! --nbd-supervise DEVICE`, started by attach in its own process group) connects to the
//! server's unix socket, negotiates the export with NBD_OPT_GO, hands the socket to the
//! kernel (NBD_SET_SOCK, size, flags, timeout; `NBD_CONNECTIONS` sockets when the export
//! allows several) and sits in NBD_DO_IT until the device is
//! disconnected; then it clears the socket and exits. With `NBD_IO_TIMEOUT` set, a request
//! the server does not answer fails with EIO instead of waiting forever, and a server that
//! closes the connection makes NBD_DO_IT return and every later request fail.
//!
//! Not testable on a host without the module (this path is exercised in the kernel lab);
//! the handshake half is tested against thinly's own server.

use super::limits::{
    HELPER_EXIT_TIMEOUT, HELPER_READY_TIMEOUT, NBD_CONNECTIONS, NBD_IO_TIMEOUT, POLL_STEP,
};
use super::records::{AttachPath, Attachment};
use anyhow::{bail, Context, Result};
use nix::libc::{c_int, c_ulong};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use thinly_nbd::proto::consts::*;

// The NBD ioctls (include/uapi/linux/nbd.h): _IO(0xab, n), each with an integer argument.
const NBD_SET_SOCK: c_ulong = 0xab00;
const NBD_SET_BLKSIZE: c_ulong = 0xab01;
const NBD_DO_IT: c_ulong = 0xab03;
const NBD_CLEAR_SOCK: c_ulong = 0xab04;
const NBD_SET_SIZE_BLOCKS: c_ulong = 0xab07;
const NBD_DISCONNECT: c_ulong = 0xab08;
const NBD_SET_TIMEOUT: c_ulong = 0xab09;
const NBD_SET_FLAGS: c_ulong = 0xab0a;
/// The block size given to the kernel; volume sizes are multiples of it.
const NBD_BLOCK_BYTES: u64 = 4096;

/// True when the kernel's NBD client is there, or `modprobe nbd` makes it so.
pub fn available() -> bool {
    let loaded = || Path::new("/sys/module/nbd").exists() && Path::new("/dev/nbd0").exists();
    if loaded() {
        return true;
    }
    let probed = Command::new("modprobe").arg("nbd").stderr(Stdio::null()).status();
    probed.is_ok_and(|s| s.success()) && loaded()
}

/// Issues an NBD ioctl whose argument is an integer passed by value.
fn nbd_ioctl(dev: &std::fs::File, request: c_ulong, arg: c_ulong) -> std::io::Result<c_int> {
    // SAFETY: `dev` is an open file for the whole call; every request used here takes its
    // argument by value (no pointer is passed, nothing is read or written through `arg`),
    // and a failure is reported through the return value and errno, which we check.
    let r = unsafe { nix::libc::ioctl(dev.as_raw_fd(), request as _, arg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The export as NBD_OPT_GO reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    pub size_bytes: u64,
    pub transmission_flags: u16,
}

fn read_u16(s: &mut impl Read) -> Result<u16> {
    let mut b = [0; 2];
    s.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
fn read_u32(s: &mut impl Read) -> Result<u32> {
    let mut b = [0; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn read_u64(s: &mut impl Read) -> Result<u64> {
    let mut b = [0; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// The fixed-newstyle handshake up to transmission: NBD_OPT_GO for `export`.
pub fn handshake(s: &mut UnixStream, export: &str) -> Result<ExportInfo> {
    if read_u64(s)? != NBDMAGIC || read_u64(s)? != IHAVEOPT {
        bail!("the server did not greet as a newstyle NBD server");
    }
    if read_u16(s)? & FLAG_FIXED_NEWSTYLE == 0 {
        bail!("the server does not offer fixed newstyle negotiation");
    }
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())?;
    let name = export.as_bytes();
    let mut opt = Vec::new();
    opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
    opt.extend_from_slice(&OPT_GO.to_be_bytes());
    opt.extend_from_slice(&(4 + name.len() as u32 + 2).to_be_bytes());
    opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
    opt.extend_from_slice(name);
    opt.extend_from_slice(&0u16.to_be_bytes()); // no information requests
    s.write_all(&opt)?;
    let mut info = None;
    loop {
        if read_u64(s)? != OPTION_REPLY_MAGIC || read_u32(s)? != OPT_GO {
            bail!("a malformed option reply");
        }
        let (kind, len) = (read_u32(s)?, read_u32(s)?);
        if len > 64 << 10 {
            bail!("an option reply of {len} bytes");
        }
        let mut body = vec![0; len as usize];
        s.read_exact(&mut body)?;
        match kind {
            REP_ACK => break,
            REP_INFO if body.len() >= 12 && body[..2] == INFO_EXPORT.to_be_bytes() => {
                let size = u64::from_be_bytes(body[2..10].try_into()?);
                let flags = u16::from_be_bytes(body[10..12].try_into()?);
                info = Some(ExportInfo { size_bytes: size, transmission_flags: flags });
            }
            REP_INFO => {}
            k if k & 0x8000_0000 != 0 => {
                bail!("the server refused export {export}: {}", String::from_utf8_lossy(&body))
            }
            k => bail!("an unexpected option reply type {k:#x}"),
        }
    }
    info.context("the server acknowledged NBD_OPT_GO without the export's size")
}

/// The first /dev/nbdN that nothing uses (no pid, no size).
fn free_device() -> Result<PathBuf> {
    if !Path::new("/sys/block/nbd0").exists() {
        bail!("this host has no kernel NBD devices (load the nbd module, or --via fuse-loop)");
    }
    for n in 0.. {
        let sys = PathBuf::from(format!("/sys/block/nbd{n}"));
        if !sys.exists() {
            break;
        }
        let size = std::fs::read_to_string(sys.join("size")).unwrap_or_default();
        if !sys.join("pid").exists() && size.trim() == "0" {
            return Ok(PathBuf::from(format!("/dev/nbd{n}")));
        }
    }
    bail!("every /dev/nbdN is in use (load nbd with a larger nbds_max)")
}

/// The pid serving `device`, from sysfs, while it is connected.
pub fn device_pid(device: &Path) -> Option<i32> {
    let name = device.file_name()?.to_str()?;
    std::fs::read_to_string(format!("/sys/block/{name}/pid")).ok()?.trim().parse().ok()
}

/// Attaches through the kernel NBD client: starts the supervisor and waits until the
/// device is connected.
pub fn attach(dir: &Path, volume: &str, read_only: bool) -> Result<Attachment> {
    let device = free_device()?;
    let exe = std::env::current_exe().context("finding the thinly binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("attach").arg(volume).arg("--pool").arg(dir).arg("--nbd-supervise").arg(&device);
    if read_only {
        cmd.arg("--read-only");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).process_group(0);
    let mut child = cmd.spawn().context("starting the NBD supervisor")?;
    let start = Instant::now();
    while device_pid(&device).is_none() {
        if let Some(status) = child.try_wait()? {
            bail!("the NBD supervisor for {} exited ({status})", device.display());
        }
        if start.elapsed() > HELPER_READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not connect in {HELPER_READY_TIMEOUT:?}", device.display());
        }
        std::thread::sleep(POLL_STEP);
    }
    let helper_pid = i32::try_from(child.id()).context("supervisor pid out of range")?;
    let (mountpoint, file) = (PathBuf::new(), PathBuf::new());
    let path = AttachPath::KernelNbd;
    Ok(Attachment { volume: volume.into(), device, path, read_only, mountpoint, file, helper_pid })
}

/// The supervisor (`--nbd-supervise DEVICE`): runs until the device is disconnected.
pub fn supervise(socket: &Path, volume: &str, device: &Path, read_only: bool) -> Result<()> {
    let connect = || -> Result<(UnixStream, ExportInfo)> {
        let mut s = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let info = handshake(&mut s, volume)?;
        Ok((s, info))
    };
    let (first, info) = connect()?;
    if info.size_bytes % NBD_BLOCK_BYTES != 0 {
        bail!("{volume}: {} bytes is not a multiple of {NBD_BLOCK_BYTES}", info.size_bytes);
    }
    // An export that allows several connections (NBD_FLAG_CAN_MULTI_CONN: a flush on one
    // covers the writes of all) gets NBD_CONNECTIONS, which the kernel spreads its queues
    // over; each connection negotiates the same export.
    let mut sockets = vec![first];
    if info.transmission_flags & FLAG_CAN_MULTI_CONN != 0 {
        for _ in 1..NBD_CONNECTIONS {
            let (s, more) = connect()?;
            if more != info {
                bail!("{volume} changed between connections ({info:?}, then {more:?})");
            }
            sockets.push(s);
        }
    }
    let mut flags = info.transmission_flags;
    if read_only {
        flags |= FLAG_READ_ONLY;
    }
    let dev = std::fs::File::options()
        .read(true)
        .write(true)
        .open(device)
        .with_context(|| format!("opening {}", device.display()))?;
    let blocks = c_ulong::try_from(info.size_bytes / NBD_BLOCK_BYTES)?;
    let setup = (|| -> std::io::Result<()> {
        nbd_ioctl(&dev, NBD_SET_BLKSIZE, NBD_BLOCK_BYTES as c_ulong)?;
        nbd_ioctl(&dev, NBD_SET_SIZE_BLOCKS, blocks)?;
        nbd_ioctl(&dev, NBD_SET_FLAGS, c_ulong::from(flags))?;
        nbd_ioctl(&dev, NBD_SET_TIMEOUT, NBD_IO_TIMEOUT.as_secs() as c_ulong)?;
        for s in &sockets {
            nbd_ioctl(&dev, NBD_SET_SOCK, s.as_raw_fd() as c_ulong)?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = nbd_ioctl(&dev, NBD_CLEAR_SOCK, 0);
        return Err(e).context(format!("configuring {}", device.display()));
    }
    // Blocks until NBD_DISCONNECT (detach) or a dead connection.
    let ended = nbd_ioctl(&dev, NBD_DO_IT, 0);
    let _ = nbd_ioctl(&dev, NBD_CLEAR_SOCK, 0);
    match ended {
        Ok(_) => Ok(()),
        Err(e) => Err(e).context(format!("{} disconnected", device.display())),
    }
}

/// Detaches: NBD_DISCONNECT (the kernel sends NBD_CMD_DISC after in-flight requests),
/// then waits for the supervisor to leave NBD_DO_IT.
pub fn teardown(a: &Attachment) -> Result<()> {
    if device_pid(&a.device).is_some() {
        let dev = std::fs::File::open(&a.device)?;
        nbd_ioctl(&dev, NBD_DISCONNECT, 0).context("NBD_DISCONNECT")?;
    }
    let start = Instant::now();
    while device_pid(&a.device).is_some() {
        if start.elapsed() > HELPER_EXIT_TIMEOUT {
            bail!("{} stayed connected after NBD_DISCONNECT", a.device.display());
        }
        std::thread::sleep(POLL_STEP);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use thinly_nbd::{ExportTable, MemExport, Server, ServerConfig};

    #[test]
    fn the_handshake_gets_the_exports_size_and_flags_from_a_real_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("nbd.sock");
        let table = ExportTable::new();
        table.insert("vol", "", Arc::new(MemExport::new(1 << 20)));
        let mut server = Server::new(Arc::new(table), ServerConfig::default());
        server.listen_unix(&sock).expect("listen");
        let handle = server.start().expect("start");
        let mut s = UnixStream::connect(&sock).expect("connect");
        let info = handshake(&mut s, "vol").expect("handshake");
        assert_eq!(info.size_bytes, 1 << 20);
        assert_ne!(info.transmission_flags & FLAG_HAS_FLAGS, 0);
        let mut s = UnixStream::connect(&sock).expect("connect");
        assert!(handshake(&mut s, "nosuch").is_err(), "an unknown export is refused");
        handle.shutdown();
    }
}
