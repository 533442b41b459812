//! `thinly repair` on damaged images vs the real thin_repair 0.9.0: our output must pass
//! the real thin_check and recover at least as many mappings. Counts are printed
//! (`cargo test --test repair -- --nocapture`).

mod common;

use std::path::Path;

use common::image::Image;
use common::*;
use thinly_engine::fsck::gen::GenConfig;

/// Mappings in a dump (ranges and singles counted, not the mapped_blocks attributes,
/// which thin_dump --repair copies from the damaged details).
fn count_xml(o: &std::process::Output) -> u64 {
    if !o.status.success() {
        return 0;
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            if l.contains("<single_mapping") {
                1
            } else {
                l.split("length=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            }
        })
        .sum()
}

/// Mappings in thin_dump's XML of `meta` (0 if it cannot be dumped).
fn mappings(meta: &Path) -> u64 {
    count_xml(&run("thin_dump", &[s(meta)]))
}

type Damage = (&'static str, fn(&mut Image), &'static [&'static str]);

fn damages() -> Vec<Damage> {
    vec![
        (
            "a mapping leaf destroyed",
            |i| {
                let (_, r) = i.deep_device();
                let (l, _) = i.first_leaf(r);
                i.zero(l)
            },
            &[],
        ),
        (
            "a bottom-level internal node destroyed",
            |i| {
                let (_, r) = i.deep_device();
                i.zero(r)
            },
            &[],
        ),
        (
            "the top-level tree destroyed",
            |i| {
                let r = i.sb().data_mapping_root.0;
                i.zero(r)
            },
            &[],
        ),
        (
            "the details tree destroyed",
            |i| {
                let r = i.sb().device_details_root.0;
                i.zero(r)
            },
            &[],
        ),
        (
            "both space maps destroyed",
            |i| {
                let sb = i.sb();
                let (mb, db) = (i.metadata_bitmap(), i.data_bitmap());
                i.zero(sb.metadata_sm_root.bitmap_root.0);
                i.zero(sb.data_sm_root.bitmap_root.0);
                i.zero(mb);
                i.zero(db)
            },
            &[],
        ),
        (
            "the superblock destroyed",
            |i| i.zero(0),
            &["--data-block-size", "128", "--nr-data-blocks", "100000", "--transaction-id", "1"],
        ),
    ]
}

/// Damages `base` every way of [`damages`], repairs with both tools and compares.
fn compare_repairs(base: &Path, dir: &Path, label: &str) {
    let clean = Image::load(base);
    let bytes = clean.bytes.len() as u64;
    let nr = mappings(base);
    eprintln!(
        "{label}: {:<40} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "damage", "original", "real", "thinly", "real dump -r", "thinly -r"
    );
    for (name, damage, extra) in damages() {
        let mut img = Image { bytes: clean.bytes.clone() };
        damage(&mut img);
        let bad = dir.join("bad.meta");
        img.save(&bad);
        let (real_out, ours_out) = (dir.join("real.meta"), dir.join("ours.meta"));
        sized_file(&real_out, bytes);
        sized_file(&ours_out, bytes);
        let mut real_args = vec!["-i", s(&bad), "-o", s(&real_out)];
        real_args.extend_from_slice(extra);
        let real_ok = run("thin_repair", &real_args).status.success();
        let real_n = if real_ok { mappings(&real_out) } else { 0 };
        let mut ours_args = vec!["repair", "-i", s(&bad), "-o", s(&ours_out)];
        ours_args.extend_from_slice(extra);
        ok(&thinly_run(&ours_args), &format!("thinly repair ({name})"));
        ok(&run("thin_check", &[s(&ours_out)]), &format!("thin_check of thinly's repair ({name})"));
        let ours_n = mappings(&ours_out);
        let real_dump = count_xml(&run("thin_dump", &["--repair", s(&bad)]));
        let ours_dump = count_xml(&thinly_run(&["dump", "--repair", s(&bad)]));
        eprintln!(
            "{label}: {name:<40} {nr:>9} {real_n:>9} {ours_n:>9} {real_dump:>12} {ours_dump:>12}"
        );
        assert!(
            ours_n >= real_n,
            "{label}: {name}: thinly recovered {ours_n}, thin_repair {real_n}"
        );
        assert!(ours_dump >= real_dump, "{label}: {name}: dump --repair {ours_dump} < {real_dump}");
        assert!(ours_n > 0, "{label}: {name}: nothing recovered");
        assert!(ours_n <= nr, "{label}: {name}: thinly invented mappings ({ours_n} > {nr})");
    }
}

#[test]
fn thinly_repair_passes_thin_check_and_recovers_at_least_what_thin_repair_does() {
    if !have_tools(&["thin_repair", "thin_restore", "thin_check", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, base) = (dir.path().join("gen.xml"), dir.path().join("base.meta"));
    let (_, bytes) = write_generated_xml(&GenConfig::small(9), &xml);
    sized_file(&base, bytes);
    ok(&run("thin_restore", &["-i", s(&xml), "-o", s(&base)]), "thin_restore");
    compare_repairs(&base, dir.path(), "generated");
}

#[test]
fn thinly_repair_of_a_damaged_kernel_written_image_beats_thin_repair() {
    if !have_tools(&["thin_repair", "thin_check", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = sample_images(dir.path())
        .into_iter()
        .find(|p| s(p).ends_with("kernel-basic.meta"))
        .expect("the kernel-written sample image");
    compare_repairs(&kernel, dir.path(), "kernel");
}

#[test]
fn repair_of_an_undamaged_image_keeps_every_mapping() {
    if !have_tools(&["thin_restore", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, base, out) =
        (dir.path().join("gen.xml"), dir.path().join("base.meta"), dir.path().join("out.meta"));
    let (_, bytes) = write_generated_xml(&GenConfig::deep_chain(2), &xml);
    sized_file(&base, bytes);
    sized_file(&out, bytes);
    ok(&run("thin_restore", &["-i", s(&xml), "-o", s(&base)]), "thin_restore");
    ok(&thinly_run(&["repair", "-i", s(&base), "-o", s(&out)]), "thinly repair");
    let (a, b) = (run("thin_dump", &[s(&base)]), run("thin_dump", &[s(&out)]));
    assert!(a.stdout == b.stdout, "repair changed an undamaged pool");
    let dumped = thinly_run(&["dump", "--repair", s(&base)]);
    assert!(dumped.stdout == a.stdout, "dump --repair of an undamaged pool differs");
}
