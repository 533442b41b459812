//! Helpers shared by the CLI tests: the `thinly` binary, the real thin-provisioning-tools
//! (a missing tool skips loudly, or fails when `CI` is set), generated pools and samples.
#![allow(dead_code)]

pub mod image;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use thinly_engine::fsck::gen::{generate_into, GenConfig};
use thinly_engine::fsck::metadata_size::estimate_blocks_v09;
use thinly_engine::fsck::xml::{dump_writer, Dialect};
use thinly_engine::fsck::Validator;

/// Runs a command, killing it if it takes longer than `secs`.
pub fn bounded(prog: &str, args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{prog} {args:?} took longer than {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Path of the `thinly` binary under test.
pub fn thinly() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_thinly"))
}

/// The size of a sweep sized for CI at `count`: ten times as many with
/// `THINLY_LONG_SWEEPS=1` (as the engine's model tests).
#[allow(dead_code)] // each test binary uses its own share of these
pub fn sweep(count: u64) -> u64 {
    if std::env::var("THINLY_LONG_SWEEPS").is_ok_and(|v| v == "1") {
        count * 10
    } else {
        count
    }
}

/// Skips (returns false) or, under CI, fails when `what` is missing. One rule for every
/// test: `thinly_test_support`.
#[allow(unused_imports)] // each test binary uses its own share of these
pub use thinly_test_support::skip_or_fail as missing;

/// True when every tool is installed; otherwise skips loudly (or fails under CI). A thin_*
/// name on PATH that is a link to a thinly binary (`thinly install-links`) is not the real
/// tool: a comparison with it could not fail.
#[allow(dead_code)]
pub fn have_tools(tools: &[&str]) -> bool {
    for t in tools {
        if let Some(found) = on_path(t) {
            let real = found.canonicalize().unwrap_or(found.clone());
            if real.file_name().is_some_and(|n| n == "thinly") {
                return missing(&format!("{t} (the one on PATH, {}, is thinly)", found.display()));
            }
        }
    }
    thinly_test_support::require_tools(tools)
}

/// Where PATH finds `name`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn run(prog: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let prog = prog.as_ref();
    Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("running {prog:?}: {e}"))
}

/// Runs `thinly <args>`.
pub fn thinly_run(args: &[&str]) -> Output {
    run(thinly(), args)
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a zero-filled file of `bytes`.
pub fn sized_file(path: &Path, bytes: u64) {
    std::fs::File::create(path).and_then(|f| f.set_len(bytes)).expect("size file");
}

/// Writes `cfg`'s pool as 0.9.0-style XML; returns (nr_mappings, metadata bytes to use).
pub fn write_generated_xml(cfg: &GenConfig, xml: &Path) -> (u64, u64) {
    let file = std::io::BufWriter::new(std::fs::File::create(xml).expect("create XML"));
    let mut writer = dump_writer(file, Dialect::V09);
    generate_into(cfg, &mut writer).expect("generate");
    drop(writer);
    let mut stats = Validator::default();
    generate_into(cfg, &mut stats).expect("valid");
    let blocks = estimate_blocks_v09(stats.nr_mappings() * 128, 128, stats.nr_devices()) * 2;
    (stats.nr_mappings(), (blocks * 4096).max(8 << 20))
}

/// The golden samples and their unpacked images (`tests/data/samples` of the checkout).
#[allow(unused_imports)] // each test binary uses its own share of these
pub use thinly_test_support::{sample, sample_images, samples_dir};

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
