//! `thinly repair` on damaged images vs the real thin_repair 0.9.0: our output must pass
//! the real thin_check and recover at least as many mappings. Counts are printed
//! (`cargo test --test repair -- --nocapture`).

mod common;

use std::path::Path;

use common::image::Image;
use common::*;
use thinly_engine::fsck::gen::GenConfig;

/// Sum of mapped_blocks in thin_dump's XML of `meta` (0 if it cannot be dumped).
fn mappings(meta: &Path) -> u64 {
    let out = run("thin_dump", &[s(meta)]);
    if !out.status.success() {
        return 0;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("mapped_blocks=\"").nth(1))
        .filter_map(|r| r.split('"').next()?.parse::<u64>().ok())
        .sum()
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
            &[
                "--data-block-size",
                "128",
                "--nr-data-blocks",
                "100000",
                "--transaction-id",
                "1",
            ],
        ),
    ]
}

#[test]
fn thinly_repair_passes_thin_check_and_recovers_at_least_what_thin_repair_does() {
    if !have_tools(&["thin_repair", "thin_restore", "thin_check", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, base) = (dir.path().join("gen.xml"), dir.path().join("base.meta"));
    let (nr, bytes) = write_generated_xml(&GenConfig::small(9), &xml);
    sized_file(&base, bytes);
    ok(
        &run("thin_restore", &["-i", s(&xml), "-o", s(&base)]),
        "thin_restore",
    );
    let clean = Image::load(&base);
    eprintln!(
        "{:<40} {:>9} {:>9} {:>9}",
        "damage", "original", "real", "thinly"
    );
    for (name, damage, extra) in damages() {
        let mut img = Image {
            bytes: clean.bytes.clone(),
        };
        damage(&mut img);
        let bad = dir.path().join("bad.meta");
        img.save(&bad);
        let (real_out, ours_out) = (dir.path().join("real.meta"), dir.path().join("ours.meta"));
        sized_file(&real_out, bytes);
        sized_file(&ours_out, bytes);
        let mut real_args = vec!["-i", s(&bad), "-o", s(&real_out)];
        real_args.extend_from_slice(extra);
        let real_ok = run("thin_repair", &real_args).status.success();
        let real_n = if real_ok { mappings(&real_out) } else { 0 };
        let mut ours_args = vec!["repair", "-i", s(&bad), "-o", s(&ours_out)];
        ours_args.extend_from_slice(extra);
        ok(&thinly_run(&ours_args), &format!("thinly repair ({name})"));
        ok(
            &run("thin_check", &[s(&ours_out)]),
            &format!("thin_check of thinly's repair ({name})"),
        );
        let ours_n = mappings(&ours_out);
        if std::env::var_os("THINLY_KEEP_DIR").is_some() {
            let keep =
                std::path::PathBuf::from(std::env::var_os("THINLY_KEEP_DIR").unwrap_or_default());
            std::fs::copy(&bad, keep.join(format!("{}.bad", name.replace(' ', "_")))).ok();
            std::fs::copy(&base, keep.join("base.meta")).ok();
        }
        eprintln!("{name:<40} {nr:>9} {real_n:>9} {ours_n:>9}");
        assert!(
            ours_n >= real_n,
            "{name}: thinly recovered {ours_n}, thin_repair {real_n}"
        );
        assert!(ours_n > 0, "{name}: nothing recovered");
        assert!(
            ours_n <= nr,
            "{name}: thinly invented mappings ({ours_n} > {nr})"
        );
    }
}

#[test]
fn repair_of_an_undamaged_image_keeps_every_mapping() {
    if !have_tools(&["thin_restore", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, base, out) = (
        dir.path().join("gen.xml"),
        dir.path().join("base.meta"),
        dir.path().join("out.meta"),
    );
    let (_, bytes) = write_generated_xml(&GenConfig::deep_chain(2), &xml);
    sized_file(&base, bytes);
    sized_file(&out, bytes);
    ok(
        &run("thin_restore", &["-i", s(&xml), "-o", s(&base)]),
        "thin_restore",
    );
    ok(
        &thinly_run(&["repair", "-i", s(&base), "-o", s(&out)]),
        "thinly repair",
    );
    let (a, b) = (run("thin_dump", &[s(&base)]), run("thin_dump", &[s(&out)]));
    assert!(a.stdout == b.stdout, "repair changed an undamaged pool");
    let dumped = thinly_run(&["dump", "--repair", s(&base)]);
    assert!(
        dumped.stdout == a.stdout,
        "dump --repair of an undamaged pool differs"
    );
}
