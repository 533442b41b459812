//! Shared helpers for the integration tests: an in-process server on a Unix socket
//! (and loopback TCP), real-client invocation with a time bound, and a raw NBD client
//! that speaks bytes directly (for hostile and edge-case tests).
#![allow(dead_code)]

pub mod certs;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thinly_nbd::proto::consts::*;
use thinly_nbd::{ExportTable, MemExport, Server, ServerConfig, ServerHandle};

/// Every real-client invocation is killed after this long.
pub const TOOL_TIMEOUT_SECS: u32 = 120;
/// Raw-socket reads give up after this long, so no test can hang.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);

pub const MEM_SIZE: u64 = 64 << 20;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("thinly-nbd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An in-process server with exports `mem` (64 MiB, writable), `ro` (read-only),
/// and `tiny` (64 MiB virtual, 1 MiB of real capacity: writes beyond fail ENOSPC).
pub struct TestServer {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub tcp: std::net::SocketAddr,
    pub mem: Arc<MemExport>,
    pub ro: Arc<MemExport>,
    pub table: Arc<ExportTable>,
    pub handle: Option<ServerHandle>,
}

impl TestServer {
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, ServerConfig::default())
    }

    pub fn start_with(tag: &str, config: ServerConfig) -> Self {
        let dir = TempDir::new(tag);
        let socket = dir.path("nbd.sock");
        let mem = Arc::new(MemExport::new(MEM_SIZE));
        let ro = Arc::new(MemExport::new(MEM_SIZE).with_read_only(true));
        let table = Arc::new(ExportTable::new());
        table.insert("mem", "writable memory", mem.clone());
        table.insert("ro", "read-only memory", ro.clone());
        let tiny = MemExport::new(MEM_SIZE).with_capacity_bytes(1 << 20);
        table.insert("tiny", "1 MiB of capacity", Arc::new(tiny));
        let mut server = Server::new(table.clone(), config);
        server.listen_unix(&socket).expect("listen unix");
        let tcp = server.listen_tcp("127.0.0.1:0").expect("listen tcp");
        let handle = Some(server.start().expect("start server"));
        Self { dir, socket, tcp, mem, ro, table, handle }
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    pub fn tcp_uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.tcp)
    }

    pub fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The path of `tool`. Missing: skip loudly (returns None), or panic under CI — the one
/// rule of `thinly_test_support`.
#[allow(unused_imports)] // each test binary uses its own share of these
pub use thinly_test_support::require_tool as tool;

/// Runs `program args…` under `timeout`, so a hung client cannot hang the test.
pub fn run(program: &Path, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["-k", "5", &TOOL_TIMEOUT_SECS.to_string()])
        .arg(program)
        .args(args)
        .output()
        .expect("spawn timeout(1)");
    if !out.status.success() {
        eprintln!(
            "{} {:?} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            program.display(),
            args,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{} {:?} failed", program.display(), args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic test data: a byte pattern that depends on the offset and a seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / 512) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i as u8)).collect()
}

// ---- raw client --------------------------------------------------------------

/// A byte stream a raw client speaks over: a Unix socket, or TLS on top of one.
pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A client that speaks the protocol byte by byte.
pub struct Raw {
    pub s: Box<dyn Io>,
}

impl Raw {
    pub fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        Self { s: Box::new(s) }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    pub fn recv(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v)?;
        Ok(v)
    }

    /// True if the server closed the connection (EOF or reset) within the timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                // Reset, or (TLS) an end without close_notify.
                Err(_) => return true,
            }
        }
    }

    /// Reads the greeting and sends client flags 0x3.
    pub fn greet(&mut self) {
        let g = self.recv(18).expect("greeting");
        assert_eq!(&g[..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&g[8..16], &IHAVEOPT.to_be_bytes());
        self.send(&3u32.to_be_bytes()).unwrap();
    }

    pub fn option(&mut self, option: u32, data: &[u8]) {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&option.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        self.send(&v).unwrap();
    }

    /// One option reply: (option, type, data).
    pub fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.recv(20).expect("option reply");
        assert_eq!(&h[..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let ty = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        (opt, ty, self.recv(len).unwrap())
    }

    /// Replies up to and including the final one.
    pub fn option_replies(&mut self) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        loop {
            let r = self.option_reply();
            let fin = r.1 == REP_ACK || r.1 & 0x8000_0000 != 0;
            v.push(r);
            if fin {
                return v;
            }
        }
    }

    pub fn go(&mut self, name: &str) {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        self.option(OPT_GO, &d);
        let r = self.option_replies();
        assert_eq!(r.last().map(|r| r.1), Some(REP_ACK), "GO {name} failed: {r:?}");
    }

    /// Greeting, optional STRUCTURED_REPLY + SET base:allocation, GO.
    pub fn open(path: &Path, name: &str, structured: bool) -> Self {
        let mut c = Self::connect(path);
        c.greet();
        if structured {
            c.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(c.option_replies().last().unwrap().1, REP_ACK);
            let q = "base:allocation";
            let mut d = (name.len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(name.as_bytes());
            d.extend_from_slice(&1u32.to_be_bytes());
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
            c.option(OPT_SET_META_CONTEXT, &d);
            assert_eq!(c.option_replies().last().unwrap().1, REP_ACK);
        }
        c.go(name);
        c
    }

    pub fn request(
        &mut self,
        command: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        data: &[u8],
    ) {
        let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&command.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&length.to_be_bytes());
        v.extend_from_slice(data);
        self.send(&v).unwrap();
    }

    /// A simple reply: (error, cookie).
    pub fn simple_reply(&mut self) -> (u32, u64) {
        let h = self.recv(16).expect("simple reply");
        assert_eq!(&h[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
        (err, u64::from_be_bytes(h[8..16].try_into().unwrap()))
    }

    /// A structured chunk: (flags, type, cookie, payload).
    pub fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let h = self.recv(20).expect("chunk header");
        assert_eq!(&h[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let flags = u16::from_be_bytes(h[4..6].try_into().unwrap());
        let ty = u16::from_be_bytes(h[6..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        (flags, ty, cookie, self.recv(len).unwrap())
    }

    /// Writes `data` at `offset` with simple replies and checks success.
    pub fn write_ok(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        self.request(CMD_WRITE, 0, cookie, offset, data.len() as u32, data);
        assert_eq!(self.simple_reply(), (0, cookie));
    }

    /// Reads with simple replies.
    pub fn read_simple(&mut self, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
        self.request(CMD_READ, 0, cookie, offset, len, &[]);
        assert_eq!(self.simple_reply(), (0, cookie));
        self.recv(len as usize).unwrap()
    }
}
