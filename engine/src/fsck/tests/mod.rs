//! Tests of the `fsck` formats. `xml_tests`, `stream_tests` and `gen_tests` are pure;
//! `tools` compares with the installed thin-provisioning-tools 0.9.0 (`thin_dump`,
//! `thin_restore`, `thin_check`, `thin_metadata_size`) and the sample images of
//! `shared/spec/samples` (override with `THINLY_SAMPLES`). A missing tool or sample
//! skips loudly, unless `CI` is set, where it fails.

mod gen_tests;
mod stream_tests;
mod tools;
mod xml_tests;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Skips (returns false) or, under CI, fails when `what` is missing.
pub(super) fn missing(what: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required when CI is set");
    }
    eprintln!("SKIPPED: {what} is not available");
    false
}

/// The samples directory, if present.
pub(super) fn samples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("THINLY_SAMPLES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/samples"),
        PathBuf::from,
    );
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        missing(&format!("the samples directory {}", dir.display()));
        None
    }
}

/// A sample file's text, or `None` (skipped) when the samples are absent.
pub(super) fn sample_text(name: &str) -> Option<String> {
    let path = samples_dir()?.join(name);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// True when `tool` runs; otherwise skips loudly (or fails under CI).
pub(super) fn have_tool(tool: &str) -> bool {
    match Command::new(tool).arg("-V").output() {
        Ok(_) => true,
        Err(_) => missing(tool),
    }
}
