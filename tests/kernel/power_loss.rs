//! Real power loss, not kill -9: `thinly serve` runs inside the kernel lab's guest on a
//! pool kept in an ext4 filesystem on a virtio disk, the guest's kernel nbd-client writes,
//! flushes, snapshots and deletes (tests/kernel/power-loss-guest.sh), and the host kills
//! QEMU at a random moment. The guest's page cache, thinly's memory and everything QEMU had
//! not yet written are gone, as in a power cut. The host then replays the ext4 journal
//! (e2fsck), copies the pool out (debugfs) and checks the contract of ARCHITECTURE.md:
//! - the real thin_check and the engine's checker find the metadata clean, and it opens;
//! - every write acknowledged before a completed flush reads back, unless a later write to
//!   the same block was issued (then either may be there), and no block holds anything else;
//! - every acknowledged snapshot exists and holds exactly vol0 as it was when it was taken;
//!   every acknowledged delete is gone; an operation cut off midway either happened or not.
//!
//! Rounds: THINLY_POWER_LOSS_ROUNDS (default 20 under CI, 3 otherwise), two guests at a time
//! (one vCPU each). THINLY_SEED=N replays a round's choices (its seed is printed).

use thinly_lab::kernel::harness;
use thinly_test_support::Rng;

use harness::Work;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thinly_engine::io::IoMode;
use thinly_engine::pool::Pool;

const GUEST_SCRIPT: &str = include_str!("power-loss-guest.sh");
const BLOCK: usize = 4096;
/// vol0's size in 4 KiB blocks (16 MiB): small enough that writes often hit a block twice.
const NR_BLOCKS: u64 = 4096;
/// How long a guest may take to boot and start writing.
const START_TIMEOUT: Duration = Duration::from_secs(600);
const GUESTS_AT_ONCE: usize = 2;

/// What the guest said it did, in order.
#[derive(Debug, Clone)]
enum Event {
    Intent { seq: u64, block: u64 },
    Durable { seq: u64 },
    SnapAsked { name: String, seq: u64 },
    SnapDone { name: String },
    DeleteAsked { name: String },
    DeleteDone { name: String },
}

fn parse_events(text: &str) -> Vec<Event> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
        let name = |i: usize| w.get(i).map(|s| s.to_string());
        let ev = match w.first().copied() {
            Some("I") => num(1).zip(num(2)).map(|(seq, block)| Event::Intent { seq, block }),
            Some("D") => num(1).map(|seq| Event::Durable { seq }),
            Some("s") => name(1).zip(num(2)).map(|(name, seq)| Event::SnapAsked { name, seq }),
            Some("S") => name(1).map(|name| Event::SnapDone { name }),
            Some("x") => name(1).map(|name| Event::DeleteAsked { name }),
            Some("X") => name(1).map(|name| Event::DeleteDone { name }),
            _ => None,
        };
        // A line cut by the power loss is the last one; anything else malformed is a bug.
        match ev {
            Some(e) => out.push(e),
            None => assert!(line == text.lines().last().unwrap_or(""), "bad event line {line:?}"),
        }
    }
    out
}

/// The bytes of write `seq` to `block`, as the guest's `yes | head -c 4096` makes them.
fn pattern(seq: u64, block: u64) -> Vec<u8> {
    let line = format!("thinly-power-loss seq={seq} block={block}\n");
    line.bytes().cycle().take(BLOCK).collect()
}

/// What each block of vol0 may hold, and what each snapshot must hold.
struct Expected {
    /// Per block: the acceptable writes (seq), `0` meaning never written (zeros).
    vol0: BTreeMap<u64, BTreeSet<u64>>,
    /// Snapshots that must exist, with their exact contents (block → seq).
    snaps_required: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Snapshots that may exist (asked for, or asked to be deleted, when the power went).
    snaps_optional: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Snapshots that must not exist.
    gone: BTreeSet<String>,
    nr_writes: u64,
    nr_durable_writes: u64,
}

fn expectations(events: &[Event]) -> Expected {
    let mut state: BTreeMap<u64, u64> = BTreeMap::new(); // block → last issued write
    let mut history: Vec<(u64, u64)> = Vec::new(); // (seq, block)
    let mut durable_seq = 0;
    let mut asked: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut done: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut delete_asked = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for e in events {
        match e {
            Event::Intent { seq, block } => {
                state.insert(*block, *seq);
                history.push((*seq, *block));
            }
            Event::Durable { seq } => durable_seq = *seq,
            // The guest asks for a snapshot only after write `seq` completed, so the
            // snapshot holds exactly the state after it.
            Event::SnapAsked { name, seq } => {
                assert_eq!(history.last().map(|h| h.0), Some(*seq), "snapshot {name} out of order");
                asked.insert(name.clone(), state.clone());
            }
            Event::SnapDone { name } => {
                let s = asked.remove(name).expect("a snapshot acknowledged before it was asked");
                done.insert(name.clone(), s);
            }
            Event::DeleteAsked { name } => {
                delete_asked.insert(name.clone());
            }
            Event::DeleteDone { name } => {
                delete_asked.remove(name);
                done.remove(name);
                gone.insert(name.clone());
            }
        }
    }
    // vol0: the last durable write of each block, plus every later write to it.
    let mut vol0: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut last_durable: BTreeMap<u64, u64> = BTreeMap::new();
    for &(seq, block) in &history {
        if seq <= durable_seq {
            last_durable.insert(block, seq);
        }
    }
    for block in 0..NR_BLOCKS {
        vol0.insert(block, BTreeSet::from([last_durable.get(&block).copied().unwrap_or(0)]));
    }
    for &(seq, block) in &history {
        if seq > durable_seq {
            vol0.entry(block).or_default().insert(seq);
        }
    }
    let mut optional = asked;
    for name in &delete_asked {
        if let Some(s) = done.remove(name) {
            optional.insert(name.clone(), s);
        }
    }
    Expected {
        vol0,
        snaps_required: done,
        snaps_optional: optional,
        gone,
        nr_writes: history.len() as u64,
        nr_durable_writes: durable_seq,
    }
}

/// Which write a block's bytes came from (0: zeros); `None` for anything else.
fn identify(buf: &[u8], block: u64) -> Option<u64> {
    if buf.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let text = std::str::from_utf8(&buf[..64]).ok()?;
    let seq: u64 = text.strip_prefix("thinly-power-loss seq=")?.split(' ').next()?.parse().ok()?;
    (buf == pattern(seq, block).as_slice()).then_some(seq)
}

fn read_volume(pool: &Pool, name: &str) -> Vec<Option<u64>> {
    let vol = pool.volume(name).unwrap_or_else(|e| panic!("opening volume {name}: {e}"));
    let mut buf = vec![0u8; BLOCK];
    (0..NR_BLOCKS)
        .map(|b| {
            vol.read(b * BLOCK as u64, &mut buf).expect("reading a recovered volume");
            identify(&buf, b)
        })
        .collect()
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success() || what.starts_with("e2fsck") && out.status.code() == Some(1),
        "{what}: exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pool directory inside an ext4 image, made without mounting (mkfs.ext4 -d).
fn make_disk(bin: &Path, work: &Work, rng: &mut Rng) -> PathBuf {
    let root = work.sub("root");
    let pool = root.join("pool");
    let pool_s = pool.to_str().expect("utf-8 path");
    let commit_ms = ["0", "1000"][rng.range(0, 2) as usize];
    harness::thinly(
        bin,
        &["pool", "create", "--pool", pool_s, "--size", "64M", "--commit-interval-ms", commit_ms],
    );
    harness::thinly(bin, &["create", "vol0", "--size", "16M", "--pool", pool_s]);
    let disk = work.path("disk.img");
    harness::ext4_image(&root, &disk, 256 << 20);
    disk
}

/// Boots the guest, waits until it writes, lets it run `run_for`, then kills QEMU.
fn power_cut(work: &Work, share: &Path, disk: &Path, run_for: Duration) {
    let script = share.join("round.sh");
    std::fs::write(&script, format!("{}\n{GUEST_SCRIPT}", harness::GUEST_LIB)).expect("script");
    let mut child = Command::new(harness::kit_dir().join("run-guest.sh"))
        .args(["-q", "-t", "600", "-c", "1", "-m", "768M", "-w"])
        .arg(share)
        .arg("-d")
        .arg(disk)
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting run-guest.sh");
    let t0 = Instant::now();
    while !share.join("started").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let console = std::fs::read_to_string(share.join("console.log")).unwrap_or_default();
            panic!(
                "the guest stopped before writing ({status}); {}\n{console}",
                work.dir.display()
            );
        }
        if t0.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            panic!("the guest did not start writing within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(run_for);
    // The share's path is in QEMU's command line (-virtfs path=...): it names this guest.
    let pattern = format!("qemu-system-x86_64.*path={}", share.display());
    let killed = Command::new("pkill").args(["-KILL", "-f", &pattern]).status().expect("pkill");
    assert!(killed.success(), "no QEMU to kill: the guest ended by itself");
    let _ = child.wait();
}

/// Replays the ext4 journal and copies the pool directory out of the image.
fn recover_pool(work: &Work, disk: &Path) -> PathBuf {
    run(Command::new("e2fsck").arg("-fy").arg(disk), "e2fsck -fy on the pool's filesystem");
    let out = work.sub("recovered");
    let req = format!("rdump /pool {}", out.display());
    run(Command::new("debugfs").args(["-R", &req]).arg(disk), "debugfs rdump");
    out.join("pool")
}

fn check_metadata(pool_dir: &Path) {
    let meta = pool_dir.join("metadata");
    if let Some((clean, text)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check after the power cut:\n{text}");
    }
    let problems = harness::engine_check(&meta);
    assert!(problems.is_empty(), "the engine's check after the power cut: {problems:?}");
}

fn verify(pool_dir: &Path, exp: &Expected) -> String {
    let pool = Pool::open(pool_dir, IoMode::Posix).expect("the pool reopens after the power cut");
    let names: BTreeSet<String> = pool.list().into_iter().map(|(n, _)| n).collect();
    for (block, got) in read_volume(&pool, "vol0").into_iter().enumerate() {
        let ok = &exp.vol0[&(block as u64)];
        assert!(
            got.is_some_and(|s| ok.contains(&s)),
            "vol0 block {block} holds write {got:?}; acceptable: {ok:?}"
        );
    }
    let check_snap = |name: &str, want: &BTreeMap<u64, u64>| {
        for (block, got) in read_volume(&pool, name).into_iter().enumerate() {
            let w = want.get(&(block as u64)).copied().unwrap_or(0);
            assert_eq!(got, Some(w), "snapshot {name} block {block}");
        }
    };
    for (name, want) in &exp.snaps_required {
        assert!(names.contains(name), "acknowledged snapshot {name} is missing: {names:?}");
        check_snap(name, want);
    }
    let mut optional_present = 0;
    for (name, want) in &exp.snaps_optional {
        if names.contains(name) {
            optional_present += 1;
            check_snap(name, want);
        }
    }
    for name in &exp.gone {
        assert!(!names.contains(name), "deleted snapshot {name} came back");
    }
    let _ = pool.close();
    format!(
        "{} writes ({} durable), {} snapshots required, {}/{} cut-off operations happened",
        exp.nr_writes,
        exp.nr_durable_writes,
        exp.snaps_required.len(),
        optional_present,
        exp.snaps_optional.len()
    )
}

fn round(bin: &Path, seed: u64) -> String {
    let mut rng = Rng(seed);
    let work = Work::new("power-loss");
    let disk = make_disk(bin, &work, &mut rng);
    let share = work.sub("share");
    harness::ship_thinly(bin, &share);
    let env = format!(
        "SEED={}\nNR_BLOCKS={NR_BLOCKS}\nFLUSH_EVERY={}\nSNAP_EVERY={}\nDELETE_EVERY={}\n",
        rng.range(1, 1 << 30),
        rng.range(2, 9),
        rng.range(8, 30),
        rng.range(20, 60),
    );
    std::fs::write(share.join("round.env"), &env).expect("round.env");
    let run_for = Duration::from_millis(rng.range(500, 6000));
    power_cut(&work, &share, &disk, run_for);
    let events = std::fs::read_to_string(share.join("events")).unwrap_or_default();
    let exp = expectations(&parse_events(&events));
    let pool_dir = recover_pool(&work, &disk);
    check_metadata(&pool_dir);
    let summary = verify(&pool_dir, &exp);
    check_metadata(&pool_dir);
    format!("seed {seed}: cut after {run_for:?} of writing: {summary}")
}

fn nr_rounds() -> u64 {
    match std::env::var("THINLY_POWER_LOSS_ROUNDS") {
        Ok(v) => v.parse().expect("THINLY_POWER_LOSS_ROUNDS is a number"),
        Err(_) if std::env::var_os("CI").is_some() => 20,
        Err(_) => 3,
    }
}

#[test]
fn power_cuts_lose_nothing_flushed_and_no_acknowledged_operation() {
    if !harness::lab_ready() {
        return;
    }
    let Some(bin) = harness::require_thinly() else { return };
    for tool in ["mkfs.ext4", "e2fsck", "debugfs", "pkill"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool} >/dev/null"))
            .status()
            .map_or(true, |s| !s.success())
        {
            assert!(std::env::var_os("CI").is_none(), "{tool} is required under CI");
            eprintln!("SKIPPED: {tool} is not installed");
            return;
        }
    }
    let seeds: Vec<u64> = match std::env::var("THINLY_SEED") {
        Ok(s) => vec![s.parse().expect("THINLY_SEED is a number")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs());
            (0..nr_rounds()).map(|i| base.wrapping_mul(1000) + i).collect()
        }
    };
    let queue = std::sync::Mutex::new(seeds.clone());
    std::thread::scope(|s| {
        for _ in 0..GUESTS_AT_ONCE.min(seeds.len()) {
            s.spawn(|| loop {
                let Some(seed) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    break;
                };
                eprintln!("power-loss round, THINLY_SEED={seed}");
                let summary = round(&bin, seed);
                eprintln!("{summary}");
            });
        }
    });
    eprintln!("{} power-loss rounds passed", seeds.len());
}
