//! Helpers shared by the CLI tests: the `thinly` binary, the real thin-provisioning-tools
//! (a missing tool skips loudly, or fails when `CI` is set), generated pools and samples.
#![allow(dead_code)]

pub mod image;

use std::io::Read;
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

/// The size of a sweep sized for CI at `count`: ten times as many with
/// `THINLY_LONG_SWEEPS=1` (as the engine's model tests).
pub fn sweep(count: u64) -> u64 {
    if std::env::var("THINLY_LONG_SWEEPS").is_ok_and(|v| v == "1") {
        count * 10
    } else {
        count
    }
}

/// Skips (returns false) or, under CI, fails when `what` is missing.
pub fn missing(what: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required when CI is set");
    }
    eprintln!("SKIPPED: {what} is not available");
    false
}

/// True when every tool runs; otherwise skips loudly (or fails under CI). A thin_* name on
/// PATH that is a link to a thinly binary (`thinly install-links`) is not the real tool: a
/// comparison with it could not fail.
pub fn have_tools(tools: &[&str]) -> bool {
    tools.iter().all(|t| {
        if let Some(found) = on_path(t) {
            let real = found.canonicalize().unwrap_or(found.clone());
            if real.file_name().is_some_and(|n| n == "thinly") {
                return missing(&format!("{t} (the one on PATH, {}, is thinly)", found.display()));
            }
        }
        match Command::new(t).arg("-V").output() {
            Ok(_) => true,
            Err(_) => missing(t),
        }
    })
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

/// The samples directory, if present (`THINLY_SAMPLES` overrides).
pub fn samples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("THINLY_SAMPLES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/samples"),
        PathBuf::from,
    );
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    // The worktree layout keeps shared/ one level higher.
    let alt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/samples");
    if alt.join("README.md").exists() {
        return Some(alt);
    }
    missing(&format!("the samples directory {}", dir.display()));
    None
}

/// Gunzips every binary sample image into `dir`.
pub fn sample_images(dir: &Path) -> Vec<PathBuf> {
    let Some(samples) = samples_dir() else {
        return Vec::new();
    };
    let mut images = Vec::new();
    for entry in std::fs::read_dir(&samples).expect("read samples") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !(name.ends_with(".bin.gz") || name.ends_with(".meta.gz")) {
            continue;
        }
        let mut bytes = Vec::new();
        let file = std::fs::File::open(&path).expect("open sample");
        flate2::read::GzDecoder::new(file).read_to_end(&mut bytes).expect("gunzip");
        let out = dir.join(name.trim_end_matches(".gz"));
        std::fs::write(&out, bytes).expect("write image");
        images.push(out);
    }
    images.sort();
    images
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
