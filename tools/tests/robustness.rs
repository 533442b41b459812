//! No tool panics on damaged metadata: random damage (bit flips, garbage, zeroed blocks,
//! resealed nonsense) in the blocks a pool uses, every reading tool run on each image;
//! each must exit 0 or 64 (failure) with no panic. Replay one case with `THINLY_SEED=<n>`.

mod common;

use common::image::Image;
use common::*;
use thinly_engine::format::checksum::{identify, BlockKind};
use thinly_engine::fsck::gen::GenConfig;
use thinly_test_support::Rng;

/// Damages a few in-use blocks of `img`; some edits are resealed so that they pass the
/// checksum and reach the structural checks.
fn damage(img: &mut Image, rng: &mut Rng) {
    let nr_blocks = img.bytes.len() as u64 / 4096;
    let used: Vec<u64> = (0..nr_blocks).filter(|&b| identify(img.block(b)).is_some()).collect();
    for _ in 0..1 + rng.below(3) {
        let b = used[rng.below(used.len() as u64) as usize];
        let kind = identify(img.block(b));
        match rng.below(4) {
            0 => img.zero(b),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let off = rng.below(4096) as usize;
                    img.block_mut(b)[off] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let off = rng.below(4000) as usize;
                let len = 1 + rng.below(64) as usize;
                for x in &mut img.block_mut(b)[off..(off + len).min(4096)] {
                    *x = rng.next_u64() as u8;
                }
            }
            _ => {
                // Resealed nonsense in the header, keys or values.
                let off = 16 + rng.below(4080) as usize;
                let v = rng.next_u64().to_le_bytes();
                let end = (off + 8).min(4096);
                img.block_mut(b)[off..end].copy_from_slice(&v[..end - off]);
                img.reseal(b, kind.unwrap_or(BlockKind::Node));
            }
        }
    }
}

#[test]
fn no_tool_panics_on_randomly_damaged_metadata() {
    if !have_tools(&["thin_restore"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, base) = (dir.path().join("gen.xml"), dir.path().join("base.meta"));
    let (_, bytes) = write_generated_xml(&GenConfig::small(12), &xml);
    sized_file(&base, bytes.min(4 << 20));
    ok(&run("thin_restore", &["-i", s(&xml), "-o", s(&base)]), "thin_restore");
    let clean = Image::load(&base);
    let seeds: Vec<u64> = match std::env::var("THINLY_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => vec![seed],
        // More rounds with THINLY_ROUNDS=n, or ten times as many with THINLY_LONG_SWEEPS=1.
        None => {
            let rounds = std::env::var("THINLY_ROUNDS").ok().and_then(|v| v.parse().ok());
            (0..rounds.unwrap_or(sweep(24))).collect()
        }
    };
    let (bad, out) = (dir.path().join("bad.meta"), dir.path().join("out.meta"));
    for seed in seeds {
        let mut rng = Rng(seed);
        let mut img = Image { bytes: clean.bytes.clone() };
        damage(&mut img, &mut rng);
        img.save(&bad);
        sized_file(&out, clean.bytes.len() as u64);
        let b = s(&bad);
        let cases: [&[&str]; 9] = [
            &["check", b],
            &["dump", b],
            &["dump", "--repair", b],
            &["dump", "-f", "human_readable", "-m", b],
            &["ls", "-o", "DEV,MAPPED,EXCLUSIVE,SHARED,HIGHEST_BLOCK,HIGHEST_MAPPED", b],
            &["delta", "--snap1", "0", "--snap2", "3", "--verbose", b],
            &["rmap", "--region", "0..100000", b],
            &["repair", "-i", b, "-o", s(&out)],
            &["trim", "--metadata-dev", b, "--data-dev", b, "--dry-run"],
        ];
        for args in cases {
            let o = thinly_run(args);
            if args[0] == "repair" && o.status.success() && have_tools(&["thin_check"]) {
                let c = run("thin_check", &[s(&out)]);
                assert!(
                    c.status.success(),
                    "THINLY_SEED={seed}: repaired metadata fails thin_check: {}",
                    String::from_utf8_lossy(&c.stderr)
                );
            }
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                matches!(o.status.code(), Some(0 | 64)) && !err.contains("panicked"),
                "THINLY_SEED={seed} thinly {args:?}: {:?}\n{err}",
                o.status
            );
        }
    }
}
