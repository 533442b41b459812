//! Data safety of the pool and its commands (issue 13): opening a pool never destroys data.

mod common;

use common::image::Image;
use common::{ok, thinly_run};
use std::path::Path;
use thinly_engine::io::IoMode;
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};

const BS: u64 = 64 << 10;

fn small_pool(dir: &Path) -> Pool {
    let settings = PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() };
    let opts = PoolOptions { data_size_bytes: 64 << 20, settings, ..PoolOptions::default() };
    Pool::create(dir, &opts).expect("create pool")
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BS as usize).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Reads data block `b` straight from the data file.
fn data_block(dir: &Path, b: u64) -> Vec<u8> {
    let bytes = std::fs::read(dir.join("data")).expect("read data file");
    bytes[(b * BS) as usize..((b + 1) * BS) as usize].to_vec()
}

#[test]
fn listing_a_pool_whose_space_map_calls_a_mapped_block_free_keeps_its_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    {
        let pool = small_pool(&dir);
        let vol = pool.create_volume("v", 16 << 20).expect("create volume");
        vol.write(0, &pattern(1), false).expect("write block 0");
        vol.write(BS, &pattern(2), false).expect("write block 1");
        pool.close().expect("close");
    }
    // The finding: a data bitmap that says a mapped block is free (checksum kept valid).
    let meta = dir.join("metadata");
    let mut img = Image::load(&meta);
    let bitmap = img.data_bitmap();
    let j = (0..16320).find(|&j| img.bitmap_entry(bitmap, j) == 1).expect("a used data block");
    img.set_bitmap_entry(bitmap, j, 0);
    img.save(&meta);
    let before = data_block(&dir, j as u64);
    assert!(before.iter().any(|&b| b != 0), "the mapped block holds data");

    let dir_s = dir.to_str().expect("utf-8 path");
    ok(&thinly_run(&["list", "--pool", dir_s]), "thinly list");
    let status = thinly_run(&["status", "--json", "--pool", dir_s]);
    ok(&status, "thinly status");
    assert_eq!(data_block(&dir, j as u64), before, "list/status destroyed a mapped block");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(v["pool"]["mode"], "ro", "a pool whose space map is wrong opens read-only");

    // Served or opened by the engine, it stays read-only: writes are refused, the data
    // and the metadata stay as they were.
    let meta_before = std::fs::read(&meta).expect("read metadata");
    let pool = Pool::open(&dir, IoMode::Auto).expect("open");
    assert_eq!(pool.status().mode, "ro");
    let vol = pool.volume("v").expect("volume");
    assert!(vol.write(2 * BS, &pattern(3), true).is_err(), "a write to a suspect pool");
    let mut buf = vec![0u8; BS as usize];
    vol.read(0, &mut buf).expect("reads still work");
    assert_eq!(buf, pattern(1));
    pool.close().expect("close");
    drop((vol, pool));
    assert_eq!(data_block(&dir, j as u64), before);
    assert_eq!(std::fs::read(&meta).expect("read metadata"), meta_before);
}

/// Waits for `child` at most 30 s (then kills it and fails).
fn wait_bounded(mut child: std::process::Child, what: &str) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn list_and_status_exit_quietly_when_their_reader_goes_away() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    let pool = small_pool(&dir);
    pool.create_volume("v", 16 << 20).expect("volume");
    pool.close().expect("close");
    drop(pool);
    let dir_s = dir.to_str().expect("utf-8 path");
    for cmd in [
        &["list", "--pool", dir_s][..],
        &["status", "--pool", dir_s],
        &["pool", "status", "--pool", dir_s],
    ] {
        // `thinly list | head -0`: the pipe's reader is gone before anything is written.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let child = std::process::Command::new(common::thinly())
            .args(cmd)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = wait_bounded(child, "thinly");
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn serve_refuses_an_explicit_pool_that_does_not_exist_unless_told_to_create_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let typo = tmp.path().join("TYPO");
    let typo_s = typo.to_str().expect("utf-8 path");
    let child = std::process::Command::new(common::thinly())
        .args(["serve", "--pool", typo_s, "--listen", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_bounded(child, "thinly serve --pool TYPO");
    assert!(!out.status.success(), "serve of a missing --pool must fail");
    assert!(!typo.join("metadata").exists(), "no pool was created");

    let mut child = std::process::Command::new(common::thinly())
        .args(["serve", "--pool", typo_s, "--listen", "none", "--create"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(typo.join("control.sock")).is_err() {
        if std::time::Instant::now() > deadline || child.try_wait().expect("try_wait").is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve --create did not start");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let out = wait_bounded(child, "thinly serve --create");
    assert!(out.status.success(), "serve --create exit");
    assert!(typo.join("metadata").exists(), "--create made the pool");
}

#[test]
fn thin_ls_fails_on_metadata_that_thin_check_rejects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    let pool = small_pool(&dir);
    let vol = pool.create_volume("v", 16 << 20).expect("create volume");
    vol.write(0, &pattern(1), false).expect("write");
    pool.close().expect("close");
    drop((vol, pool));
    let meta = dir.join("metadata");
    let meta_s = meta.to_str().expect("utf-8 path");
    ok(&thinly_run(&["ls", meta_s]), "thin_ls of good metadata");
    let mut img = Image::load(&meta);
    let bitmap = img.data_bitmap();
    let j = (0..16320).find(|&j| img.bitmap_entry(bitmap, j) == 1).expect("a used data block");
    img.set_bitmap_entry(bitmap, j, 0);
    img.save(&meta);
    assert!(!thinly_run(&["check", meta_s]).status.success(), "thin_check rejects it");
    let out = thinly_run(&["ls", meta_s]);
    assert_eq!(out.status.code(), Some(64), "thin_ls fails as thin_check does");
}

#[test]
fn thin_ls_and_thin_check_accept_a_pool_holding_a_metadata_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    let pool = small_pool(&dir);
    let vol = pool.create_volume("v", 16 << 20).expect("create volume");
    vol.write(0, &pattern(1), false).expect("write");
    pool.snapshot("v", "s", true).expect("snapshot");
    pool.message("reserve_metadata_snap").expect("reserve");
    vol.write(0, &pattern(2), false).expect("write after the snapshot");
    pool.close().expect("close");
    drop((vol, pool));
    let meta = dir.join("metadata");
    let meta_s = meta.to_str().expect("utf-8 path");
    ok(&thinly_run(&["check", meta_s]), "thin_check with a held metadata snapshot");
    ok(&thinly_run(&["ls", meta_s]), "thin_ls with a held metadata snapshot");
    ok(&thinly_run(&["ls", "-m", meta_s]), "thin_ls -m");
    if common::have_tools(&["thin_check"]) {
        ok(&common::run("thin_check", &[meta_s]), "the real thin_check");
    }
}
