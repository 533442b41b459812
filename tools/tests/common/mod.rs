//! Helpers shared by the CLI tests: the `thinly` binary, the real thin-provisioning-tools
//! (a missing tool skips loudly, or fails when `CI` is set), generated pools and samples.
#![allow(dead_code)]

pub mod image;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thinly_engine::fsck::gen::{generate_into, GenConfig};
use thinly_engine::fsck::metadata_size::estimate_blocks_v09;
use thinly_engine::fsck::xml::{dump_writer, Dialect};
use thinly_engine::fsck::Validator;

/// Path of the `thinly` binary under test.
pub fn thinly() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_thinly"))
}

/// Skips (returns false) or, under CI, fails when `what` is missing; and true when every
/// tool is installed, else the same skip. One rule for every test: `thinly_test_support`.
#[allow(unused_imports)] // each test binary uses its own share of these
pub use thinly_test_support::{require_tools as have_tools, skip_or_fail as missing};

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
