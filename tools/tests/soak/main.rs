//! The soak (issue 13, "What must be shown"): 64 NBD connections of mixed reads, writes,
//! flushes and trims on one volume, snapshots created and deleted through the control
//! socket meanwhile, against the real `thinly serve` on a unix socket; the server is killed
//! with SIGKILL and restarted in the middle. After each restart every write acknowledged
//! before a completed flush reads back, every acknowledged snapshot exists (and no
//! acknowledged deletion came back), and the metadata passes thin_check; after the final
//! clean stop every acknowledged write reads back.
//!
//! Each connection owns a region of the volume (regions share their boundary data blocks,
//! so neighbours' partial-block writes meet in the same blocks). `THINLY_SOAK_SECS` sets the
//! I/O time (default 10 s; 600 for the opt-in ten-minute soak, with a kill every two
//! minutes); `THINLY_SEED=N` replays the choices. Bounded: every reply waits at most
//! 120 s, and the test stops by itself.

mod client;
#[path = "../common/mod.rs"]
mod common;
mod model;

use client::{Client, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE};
use model::{Region, Snapshots, SECTOR};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thinly_server::control::{self, Request};
use thinly_test_support::Rng;

const NR_CONNECTIONS: usize = 64;
/// 65 sectors: not a multiple of the data block, so regions share boundary blocks.
const REGION_BYTES: usize = 65 * SECTOR;
const BLOCK_BYTES: u64 = 64 << 10;
const MAX_OP_SECTORS: u64 = 16;
/// Snapshots kept at once; older ones are deleted as new ones come.
const MAX_SNAPSHOTS: usize = 6;
const VOLUME: &str = "vol0";

/// What every thread shares: the stop signals and the figures of the run.
#[derive(Default)]
struct Shared {
    /// The server is being killed: an I/O error ends a thread's round quietly.
    killing: AtomicBool,
    /// The last round is over: threads stop after their current request.
    stop: AtomicBool,
    nr_ops: AtomicU64,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    nr_flushes: AtomicU64,
    nr_trims: AtomicU64,
}

fn soak_secs() -> u64 {
    std::env::var("THINLY_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

fn seed() -> u64 {
    let from_env = std::env::var("THINLY_SEED").ok().and_then(|s| s.parse().ok());
    from_env.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.map(|d| d.as_nanos() as u64).unwrap_or(1)
    })
}

fn thinly_ok(args: &[&str]) {
    let out = common::thinly_run(args);
    common::ok(&out, &format!("thinly {args:?}"));
}

/// `thinly serve` of the pool, its stderr in `log`; returns once the control socket answers.
fn start_server(dir: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let pool = dir.to_str().unwrap();
    let mut child = Command::new(common::thinly())
        .args(["serve", "--pool", pool, "--listen", "none", "--handshake-timeout", "0"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting thinly serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(dir.join("control.sock")).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("thinly serve exited: {status}");
        }
        assert!(Instant::now() < deadline, "thinly serve did not start in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
}

/// Waits (at most 60 s) for the server to exit; its exit status.
fn reap(mut child: Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("thinly serve did not exit in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Our checker, then the real thin_check (skipped loudly when missing; a failure in CI).
fn check_metadata(dir: &Path) {
    let meta = dir.join("metadata");
    thinly_ok(&["check", meta.to_str().unwrap()]);
    if let Some(tc) = thinly_test_support::require_tool("thin_check") {
        let out = common::run(&tc, &[meta.to_str().unwrap()]);
        common::ok(&out, "thin_check after the soak");
    }
}

/// The server process; killed if the test ends without stopping it.
struct Server(Option<Child>);

impl Server {
    fn child(&self) -> &Child {
        self.0.as_ref().expect("running")
    }

    /// SIGKILL, as a crash: nothing is committed on the way out.
    fn kill_9(&mut self) {
        signal(self.child(), nix::sys::signal::Signal::SIGKILL);
        reap(self.0.take().expect("running"));
    }

    /// SIGTERM: the server commits and exits 0.
    fn stop(&mut self) {
        signal(self.child(), nix::sys::signal::Signal::SIGTERM);
        let status = reap(self.0.take().expect("running"));
        assert!(status.success(), "thinly serve after SIGTERM: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn fill(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(n + 8);
    while data.len() < n {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    data.truncate(n);
    data
}

/// A random run of whole sectors inside the region: (region offset, length).
fn sectors(rng: &mut Rng, region: &Region) -> (usize, usize) {
    let nr = (region.len() / SECTOR) as u64;
    let first = rng.below(nr);
    let n = rng.range(1, MAX_OP_SECTORS + 1).min(nr - first);
    (first as usize * SECTOR, n as usize * SECTOR)
}

/// One or two data blocks wholly inside the region, if it holds any: (region offset, length).
fn whole_blocks(rng: &mut Rng, region: &Region) -> Option<(usize, usize)> {
    let first = region.start.div_ceil(BLOCK_BYTES);
    let end = (region.start + region.len() as u64) / BLOCK_BYTES;
    let nr = end.checked_sub(first).filter(|&n| n > 0)?;
    let b = first + rng.below(nr);
    let n = rng.range(1, 3).min(end - b);
    Some(((b * BLOCK_BYTES - region.start) as usize, (n * BLOCK_BYTES) as usize))
}

fn replied(r: std::io::Result<Result<(), u32>>, what: &str) -> std::io::Result<()> {
    match r? {
        Ok(()) => Ok(()),
        Err(errno) => Err(std::io::Error::other(format!("{what}: NBD error {errno}"))),
    }
}

/// One request of the mix: 40 % writes, 25 % reads (checked against the model), 10 % trims
/// of whole blocks, 25 % flushes.
fn one_request(
    c: &mut Client,
    region: &mut Region,
    rng: &mut Rng,
    shared: &Shared,
) -> std::io::Result<()> {
    let kind = rng.below(100);
    let trim = if (65..75).contains(&kind) { whole_blocks(rng, region) } else { None };
    if let Some((at, len)) = trim {
        let mut zeros = vec![0u8; len];
        region.sending(at, len);
        replied(c.request(CMD_TRIM, region.start + at as u64, &mut zeros), "trim")?;
        region.acked(at, &zeros);
        shared.nr_trims.fetch_add(1, Ordering::Relaxed);
    } else if kind < 40 {
        let (at, len) = sectors(rng, region);
        let mut data = fill(rng, len);
        region.sending(at, len);
        replied(c.request(CMD_WRITE, region.start + at as u64, &mut data), "write")?;
        region.acked(at, &data);
        shared.bytes_written.fetch_add(len as u64, Ordering::Relaxed);
    } else if kind < 65 {
        let (at, len) = sectors(rng, region);
        let mut buf = vec![0u8; len];
        replied(c.request(CMD_READ, region.start + at as u64, &mut buf), "read")?;
        let want = &region.acked[at..at + len];
        assert!(
            buf == want,
            "a read at {} does not return what was written",
            region.start + at as u64
        );
        shared.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
    } else {
        replied(c.request(CMD_FLUSH, 0, &mut []), "flush")?;
        region.flush_completed();
        shared.nr_flushes.fetch_add(1, Ordering::Relaxed);
    }
    shared.nr_ops.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// One connection's requests until the round ends (stop, or the server killed under it).
fn connection(socket: PathBuf, mut region: Region, mut rng: Rng, shared: Arc<Shared>) -> Region {
    let mut c = match Client::open(&socket, VOLUME) {
        Ok(c) => c,
        Err(_) if shared.killing.load(Ordering::SeqCst) => return region,
        Err(e) => panic!("connecting to {}: {e}", socket.display()),
    };
    while !shared.stop.load(Ordering::SeqCst) {
        if let Err(e) = one_request(&mut c, &mut region, &mut rng, &shared) {
            if shared.killing.load(Ordering::SeqCst) {
                return region;
            }
            panic!("connection of region {}: {e}", region.start);
        }
    }
    c.disconnect();
    region
}

/// Creates snapshots of the volume and deletes the oldest beyond `MAX_SNAPSHOTS`, through
/// the control socket, until the round ends.
fn snapshotter(dir: PathBuf, snaps: Arc<Mutex<Snapshots>>, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let mut s = snaps.lock().unwrap();
        let (req, name, create) = if s.live.len() >= MAX_SNAPSHOTS {
            let name = s.live.remove(0);
            (Request::Delete { name: name.clone(), force: false }, name, false)
        } else {
            s.next += 1;
            let name = format!("s{}", s.next);
            let req =
                Request::Snapshot { origin: VOLUME.into(), name: name.clone(), read_only: true };
            (req, name, true)
        };
        match control::send(&dir, &req) {
            Some(Ok(r)) if r.ok => {
                if create {
                    s.live.push(name);
                    s.nr_created += 1;
                } else {
                    s.gone.push(name);
                    s.nr_deleted += 1;
                }
            }
            Some(Ok(r)) => panic!("{req:?} refused: {:?}", r.error),
            // Never sent: nothing to doubt; the round is ending.
            None if shared.killing.load(Ordering::SeqCst) => {
                if !create {
                    s.live.insert(0, name);
                }
                return;
            }
            Some(Err(_)) if shared.killing.load(Ordering::SeqCst) => {
                s.doubt.push(name);
                return;
            }
            other => panic!("{req:?}: no answer from the control socket: {other:?}"),
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the connections and the snapshotter for `time`, then ends the round with `end`
/// (stop or kill); returns the regions' models.
fn round(
    dir: &Path,
    regions: Vec<Region>,
    snaps: &Arc<Mutex<Snapshots>>,
    shared: &Arc<Shared>,
    (time, seed): (Duration, u64),
    end: impl FnOnce(),
) -> Vec<Region> {
    let socket = dir.join("nbd.sock");
    let workers: Vec<_> = regions
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (socket, shared) = (socket.clone(), shared.clone());
            let rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            std::thread::spawn(move || connection(socket, r, rng, shared))
        })
        .collect();
    let snapshotter = {
        let (dir, snaps, shared) = (dir.to_path_buf(), snaps.clone(), shared.clone());
        std::thread::spawn(move || snapshotter(dir, snaps, shared))
    };
    std::thread::sleep(time);
    end();
    let regions = workers.into_iter().map(|w| w.join().expect("a connection failed")).collect();
    snapshotter.join().expect("the snapshotter failed");
    regions
}

/// Reads every region back through one connection.
fn read_regions(dir: &Path, regions: &[Region]) -> Vec<Vec<u8>> {
    let mut c = Client::open(&dir.join("nbd.sock"), VOLUME).expect("connecting after a restart");
    assert!(c.size_bytes >= (NR_CONNECTIONS * REGION_BYTES) as u64, "the volume holds the regions");
    let mut all = Vec::new();
    for r in regions {
        let mut bytes = vec![0u8; r.len()];
        for (i, chunk) in bytes.chunks_mut(BLOCK_BYTES as usize).enumerate() {
            let at = r.start + i as u64 * BLOCK_BYTES;
            replied(c.request(CMD_READ, at, chunk), "read back").expect("reading back");
        }
        all.push(bytes);
    }
    c.disconnect();
    all
}

/// The volumes a server lists.
fn volume_names(dir: &Path) -> Vec<String> {
    let r = control::send(dir, &Request::List).expect("a control socket").expect("an answer");
    assert!(r.ok, "list: {:?}", r.error);
    let vols = r.result.as_array().expect("a list of volumes");
    vols.iter().map(|v| v["name"].as_str().expect("a name").to_string()).collect()
}

/// After a crash and restart: nothing flushed is lost, no acknowledged snapshot change.
fn verify_after_crash(dir: &Path, regions: &mut [Region], snaps: &Mutex<Snapshots>) {
    let read = read_regions(dir, regions);
    for (r, actual) in regions.iter_mut().zip(read) {
        if let Some(s) = r.check_after_crash(&actual) {
            panic!("flushed data lost at byte {} after kill -9", r.start + (s * SECTOR) as u64);
        }
        r.adopt(&actual);
    }
    snaps.lock().unwrap().check(&volume_names(dir));
}

/// A pool with one 64 MiB volume: 64 KiB data blocks, so whole-block trims are known.
fn new_pool(dir: &Path) {
    let pool = dir.to_str().unwrap();
    thinly_ok(&["pool", "create", "--pool", pool, "--size", "2G", "--block-size", "64K"]);
    thinly_ok(&["create", VOLUME, "--size", "64M", "--pool", pool]);
}

#[test]
fn sixty_four_connections_with_snapshots_and_kill_9_lose_no_flushed_write() {
    let (secs, seed) = (soak_secs(), seed());
    eprintln!("soak: {secs} s of I/O, seed {seed} (THINLY_SEED={seed} replays the choices)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let log = tmp.path().join("serve.log");
    new_pool(&dir);
    let nr_kills = (secs / 120).max(1);
    let round_time = Duration::from_millis(secs * 1000 / (nr_kills + 1));
    let shared = Arc::new(Shared::default());
    let snaps = Arc::new(Mutex::new(Snapshots::default()));
    let mut regions: Vec<Region> =
        (0..NR_CONNECTIONS).map(|i| Region::new((i * REGION_BYTES) as u64, REGION_BYTES)).collect();
    let mut server = Server(Some(start_server(&dir, &log)));
    for k in 0..nr_kills {
        let end = || {
            shared.killing.store(true, Ordering::SeqCst);
            server.kill_9();
        };
        regions = round(&dir, regions, &snaps, &shared, (round_time, seed + k), end);
        check_metadata(&dir);
        server = Server(Some(start_server(&dir, &log)));
        verify_after_crash(&dir, &mut regions, &snaps);
        shared.killing.store(false, Ordering::SeqCst);
    }
    let end = || shared.stop.store(true, Ordering::SeqCst);
    regions = round(&dir, regions, &snaps, &shared, (round_time, seed + nr_kills), end);
    server.stop();
    check_metadata(&dir);

    // After a clean stop every acknowledged write is there, flushed or not.
    server = Server(Some(start_server(&dir, &log)));
    for (r, actual) in regions.iter().zip(read_regions(&dir, &regions)) {
        if let Some(s) = r.first_difference(&actual) {
            panic!(
                "acknowledged data lost at byte {} after a clean stop",
                r.start + (s * SECTOR) as u64
            );
        }
    }
    let mut s = snaps.lock().unwrap();
    s.check(&volume_names(&dir));
    server.stop();
    check_metadata(&dir);
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "soak: {NR_CONNECTIONS} connections, {secs} s, {nr_kills} kill -9 and restarts: {} requests \
         ({} bytes written, {} bytes read, {} flushes, {} trims), {} snapshots created, {} deleted; \
         nothing lost, thin_check clean",
        n(&shared.nr_ops),
        n(&shared.bytes_written),
        n(&shared.bytes_read),
        n(&shared.nr_flushes),
        n(&shared.nr_trims),
        s.nr_created,
        s.nr_deleted
    );
}
