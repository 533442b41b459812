//! What the harness runs on: the external tools (found on PATH, with their versions), the
//! machine (nproc, memory, kernel), the working directories (removed on drop unless
//! --keep), and `run_bounded`, the one way an external command is run to completion.

use super::limits;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The external tools; `None` when not on PATH.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub fio: Option<PathBuf>,
    pub qemu_nbd: Option<PathBuf>,
    pub qemu_img: Option<PathBuf>,
    /// Sends the untimed flush that ends every writing case.
    pub qemu_io: Option<PathBuf>,
    pub nbdkit: Option<PathBuf>,
    /// Live qcow2 snapshots (QMP `blockdev-snapshot-sync`).
    pub qsd: Option<PathBuf>,
    /// The binary being run: thinly itself (`thinly serve`, `thinly pool create`).
    pub thinly: PathBuf,
}

impl Tools {
    pub fn find() -> Tools {
        Tools {
            fio: which("fio"),
            qemu_nbd: which("qemu-nbd"),
            qemu_img: which("qemu-img"),
            qemu_io: which("qemu-io"),
            nbdkit: which("nbdkit"),
            qsd: which("qemu-storage-daemon"),
            thinly: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("thinly")),
        }
    }

    /// One line per missing peer tool.
    pub fn missing_peers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, path) in [
            ("qemu-nbd", &self.qemu_nbd),
            ("qemu-img", &self.qemu_img),
            ("nbdkit", &self.nbdkit),
            ("qemu-storage-daemon", &self.qsd),
        ] {
            if path.is_none() {
                out.push(format!(
                    "{name} is not installed; the engines that need it are reported as missing"
                ));
            }
        }
        if self.qemu_io.is_none() {
            out.push(
                "qemu-io is not installed; writing cases are not followed by a flush".to_string(),
            );
        }
        out
    }

    /// `(tool, version line)` of every tool, "missing" where absent.
    pub fn versions(&self) -> Vec<(String, String)> {
        let mut v = vec![(
            "thinly".to_string(),
            version_line(&self.thinly, "--version").unwrap_or_else(|e| format!("? ({e:#})")),
        )];
        for (name, path, flag) in [
            ("fio", &self.fio, "--version"),
            ("qemu-nbd", &self.qemu_nbd, "--version"),
            ("qemu-img", &self.qemu_img, "--version"),
            ("qemu-io", &self.qemu_io, "--version"),
            ("nbdkit", &self.nbdkit, "--version"),
            ("qemu-storage-daemon", &self.qsd, "--version"),
        ] {
            let line = match path {
                Some(p) => version_line(p, flag).unwrap_or_else(|e| format!("? ({e:#})")),
                None => "missing".to_string(),
            };
            v.push((name.to_string(), line));
        }
        v
    }
}

fn version_line(prog: &Path, flag: &str) -> Result<String> {
    let out = run_bounded(Command::new(prog).arg(flag), Duration::from_secs(10))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// The first executable named `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The machine, as recorded with the results.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub cpu: String,
    pub filesystem: String,
}

impl Machine {
    pub fn probe(dir: &Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let kernel = run_bounded(Command::new("uname").arg("-r"), Duration::from_secs(5))
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("? ({e:#})"));
        // findmnt names the mounted type (ext4); statfs only knows "ext2/ext3" for ext4.
        let output = |cmd: &mut Command| {
            run_bounded(cmd, Duration::from_secs(5))
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let filesystem =
            output(Command::new("findmnt").args(["-n", "-o", "FSTYPE,SOURCE", "-T"]).arg(dir))
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" on "))
                .or_else(|| output(Command::new("stat").args(["-f", "-c", "%T"]).arg(dir)))
                .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory_bytes: memory_kib * 1024,
            kernel,
            cpu,
            filesystem,
        }
    }
}

/// The working directories: `data` (pools and images, on the filesystem under test) and
/// `sockets` (short, for unix socket paths). Both are removed on drop unless kept.
#[derive(Debug)]
pub struct Workspace {
    pub data: PathBuf,
    pub sockets: PathBuf,
    remove_data: bool,
}

impl Workspace {
    pub fn create(dir: Option<&Path>, keep: bool) -> Result<Workspace> {
        let tag = format!("{}-{}", std::process::id(), nanos() % 1_000_000);
        let (data, remove_data) = match dir {
            Some(d) => (d.join(format!("thinly-bench-{tag}")), !keep),
            None => (PathBuf::from(format!("/var/tmp/thinly-bench-{tag}")), !keep),
        };
        std::fs::create_dir_all(&data)
            .with_context(|| format!("creating the working directory {}", data.display()))?;
        let sockets = PathBuf::from(format!("/tmp/tb-{tag}"));
        std::fs::create_dir_all(&sockets)
            .with_context(|| format!("creating the socket directory {}", sockets.display()))?;
        Ok(Workspace { data, sockets, remove_data })
    }

    /// A unix socket path in the short directory; errors if it would be too long.
    pub fn socket(&self, name: &str) -> Result<PathBuf> {
        let p = self.sockets.join(name);
        let len = p.as_os_str().len();
        if len > limits::MAX_SOCKET_PATH {
            bail!(
                "socket path {} is {len} bytes (at most {})",
                p.display(),
                limits::MAX_SOCKET_PATH
            );
        }
        Ok(p)
    }

    /// A fresh, empty directory under `data`.
    pub fn fresh_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.data.join(name);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.sockets);
        if self.remove_data {
            let _ = std::fs::remove_dir_all(&self.data);
        } else {
            eprintln!("thinly bench: kept {}", self.data.display());
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Runs `cmd` to completion with stdout and stderr captured; kills it after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let out_reader = child.stdout.take().map(reader_thread);
    let err_reader = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().with_context(|| format!("waiting for {shown}"))? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish within {} s (killed)", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    let stderr = err_reader.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// Like `run_bounded`, but a failing exit status is an error carrying stderr.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, timeout)?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, tail(&String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out)
}

fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// The last `STDERR_TAIL` bytes of a log, trimmed.
pub fn tail(s: &str) -> String {
    let s = s.trim();
    let mut start = s.len().saturating_sub(limits::STDERR_TAIL);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// Bytes a file or a directory tree occupies on disk (st_blocks × 512).
pub fn allocated_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if !m.is_dir() {
        return Ok(m.blocks() * 512);
    }
    let mut total = 0;
    for e in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let e = e.with_context(|| format!("listing {}", path.display()))?;
        if e.file_type().map(|t| t.is_socket()).unwrap_or(false) {
            continue;
        }
        total += allocated_bytes(&e.path())?;
    }
    Ok(total)
}

/// `git describe --always --dirty` of the source tree this binary was built from, or why
/// it is unknown (an installed binary whose tree is gone).
pub fn git_commit() -> String {
    let tree = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new("git");
    cmd.args(["-C", tree, "describe", "--always", "--dirty", "--abbrev=40"]);
    match run_bounded(&mut cmd, Duration::from_secs(10)) {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!("unknown ({})", tail(&String::from_utf8_lossy(&o.stderr))),
        Err(e) => format!("unknown ({e:#})"),
    }
}

/// User + system CPU seconds `pid` has used (fields 14 and 15 of /proc/PID/stat, in clock
/// ticks); `None` once it is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after the
    // last ')' start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (hz > 0).then(|| ticks as f64 / hz as f64)
}
