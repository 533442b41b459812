//! What every thinly test shares, in one place: the rule for a missing real tool and the
//! place of the golden samples.
//!
//! - A test that needs a real program (`thin_check`, `qemu-img`, `nbdinfo`, …) asks
//!   [`require_tool`]: it gets the path, or — when the program is missing — the test skips
//!   with a loud `*** SKIPPED` line on stderr, unless the environment variable `CI` is set,
//!   where it fails instead. [`skip_or_fail`] is that rule for anything else a test needs.
//! - The golden samples (metadata images written by the real thin-provisioning-tools and by
//!   the kernel, with their XML) live in the repository under `tests/data/samples/`;
//!   [`samples_dir`] names it (`THINLY_SAMPLES` overrides), [`sample`] one file in it,
//!   [`gunzip_sample`] its bytes, [`sample_images`] every metadata image unpacked.
//!
//! - [`LoopDevice`]: a real loop device (root and `losetup`, same skip rule), detached
//!   on drop.
//!
//! This crate depends on no thinly crate, so any crate of the workspace can take it as a
//! dev-dependency without a dependency cycle. It is never a dependency of product code.

mod loopdev;
pub use loopdev::LoopDevice;

use std::io::Read;
use std::path::{Path, PathBuf};

/// The environment variable that turns every skip into a failure.
pub const CI_VAR: &str = "CI";

/// Directories searched after `PATH`: the thin-provisioning-tools live in sbin, which a
/// normal user's `PATH` may lack.
const EXTRA_TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/local/bin"];

/// True when `CI` is set: then nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var_os(CI_VAR).is_some()
}

/// The rule for a missing prerequisite: under CI, panics (the test fails); otherwise prints
/// a loud skip line naming `what` and returns false, so a caller can write
/// `if !ok { return skip_or_fail("…") }` or use it in a boolean chain.
pub fn skip_or_fail(what: &str) -> bool {
    if under_ci() {
        panic!("{what} is required when {CI_VAR} is set (install it; see test.sh)");
    }
    eprintln!("*** SKIPPED: {what} is not available (set {CI_VAR}=1 to make this a failure)");
    false
}

/// Where `name` is installed (`PATH`, then the sbin directories), without any skip.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    path_dirs
        .unwrap_or_default()
        .into_iter()
        .chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The path of the real program `name`, or `None` after [`skip_or_fail`] (a panic under CI).
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        skip_or_fail(&format!("the program `{name}`"));
    }
    found
}

/// True when every program in `names` is installed; otherwise skips loudly (or fails under
/// CI) naming each one missing.
pub fn require_tools(names: &[&str]) -> bool {
    // Not `all`: every missing program is named, not only the first.
    names.iter().filter(|name| require_tool(name).is_none()).count() == 0
}

/// The golden samples directory: `$THINLY_SAMPLES`, else `tests/data/samples` of this
/// checkout. The samples are part of the repository, so a missing file is a failure.
pub fn samples_dir() -> PathBuf {
    match std::env::var_os("THINLY_SAMPLES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/samples"),
    }
}

/// The path of one golden sample (`snaps.bin.gz`, `kernel-basic.xml`, …).
pub fn sample(name: &str) -> PathBuf {
    samples_dir().join(name)
}

/// The bytes of a gzipped sample (`snaps.bin.gz` → the metadata image). Panics when the
/// sample is missing or damaged: the samples are part of the repository.
pub fn gunzip_sample(name: &str) -> Vec<u8> {
    let path = sample(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
    bytes
}

/// Unpacks every metadata image among the samples (`*.bin.gz`, `*.meta.gz`) into `dir`;
/// returns their paths, sorted.
pub fn sample_images(dir: &Path) -> Vec<PathBuf> {
    let samples = samples_dir();
    let entries = std::fs::read_dir(&samples)
        .unwrap_or_else(|e| panic!("reading the samples in {}: {e}", samples.display()));
    let mut images = Vec::new();
    for entry in entries {
        let path = entry.expect("a samples directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !(name.ends_with(".bin.gz") || name.ends_with(".meta.gz")) {
            continue;
        }
        let out = dir.join(name.trim_end_matches(".gz"));
        std::fs::write(&out, gunzip_sample(&name)).expect("writing an unpacked sample");
        images.push(out);
    }
    images.sort();
    images
}

/// SplitMix64: a tiny seeded generator, so a test's seed replays the same choices.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_directory_holds_the_images_and_their_xml() {
        for name in ["README.md", "snaps.bin.gz", "snaps.xml", "kernel-basic.meta.gz"] {
            assert!(sample(name).is_file(), "{} is missing", sample(name).display());
        }
    }

    #[test]
    fn every_metadata_image_unpacks_to_whole_4k_blocks() {
        let dir = std::env::temp_dir().join(format!("thinly-test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let images = sample_images(&dir);
        let sizes: Vec<u64> = images.iter().map(|p| p.metadata().expect("image").len()).collect();
        std::fs::remove_dir_all(&dir).expect("removing the scratch directory");
        assert_eq!(images.len(), 6, "{images:?}");
        assert!(sizes.iter().all(|s| *s > 0 && s % 4096 == 0), "{sizes:?}");
    }

    #[test]
    fn a_program_on_the_path_is_found_and_a_made_up_one_is_not() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("thinly-no-such-program-x9").is_none());
    }
}
