//! Round trips against the installed thin-provisioning-tools: real thin_restore → thinly
//! dump, thinly restore → real thin_check and thin_dump, and thinly dump of every sample.

mod common;

use common::*;
use thinly_engine::fsck::gen::GenConfig;

fn real_restore_then_thinly_dump(cfg: &GenConfig) {
    if !have_tools(&["thin_restore"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, meta) = (dir.path().join("pool.xml"), dir.path().join("pool.meta"));
    let (_, bytes) = write_generated_xml(cfg, &xml);
    sized_file(&meta, bytes);
    ok(&run("thin_restore", &["-i", s(&xml), "-o", s(&meta)]), "thin_restore");
    let ours = thinly_run(&["dump", s(&meta)]);
    ok(&ours, "thinly dump");
    assert!(ours.stdout == std::fs::read(&xml).expect("read"), "thinly dump differs for {cfg:?}");
}

fn thinly_restore_then_real_check_and_dump(cfg: &GenConfig) {
    if !have_tools(&["thin_check", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, meta) = (dir.path().join("pool.xml"), dir.path().join("pool.meta"));
    let (_, bytes) = write_generated_xml(cfg, &xml);
    sized_file(&meta, bytes);
    ok(&thinly_run(&["restore", "-i", s(&xml), "-o", s(&meta)]), "thinly restore");
    ok(&run("thin_check", &[s(&meta)]), "thin_check of thinly's restore");
    ok(&thinly_run(&["check", s(&meta)]), "thinly check of thinly's restore");
    let real = run("thin_dump", &[s(&meta)]);
    ok(&real, "thin_dump");
    assert!(real.stdout == std::fs::read(&xml).expect("read"), "thin_dump differs for {cfg:?}");
}

#[test]
fn real_restore_then_thinly_dump_reproduces_small_generated_pools() {
    for seed in 0..3 {
        real_restore_then_thinly_dump(&GenConfig::small(seed));
    }
}

#[test]
fn real_restore_then_thinly_dump_reproduces_a_110_snapshot_chain() {
    real_restore_then_thinly_dump(&GenConfig::deep_chain(11));
}

#[test]
fn real_restore_then_thinly_dump_reproduces_a_million_mapping_pool() {
    real_restore_then_thinly_dump(&GenConfig::large(5));
}

#[test]
fn thinly_restore_of_small_generated_pools_passes_real_check_and_dump() {
    for seed in 0..3 {
        thinly_restore_then_real_check_and_dump(&GenConfig::small(seed));
    }
}

#[test]
fn thinly_restore_of_a_110_snapshot_chain_passes_real_check_and_dump() {
    thinly_restore_then_real_check_and_dump(&GenConfig::deep_chain(11));
}

#[test]
fn thinly_restore_of_a_million_mapping_pool_passes_real_check_and_dump() {
    thinly_restore_then_real_check_and_dump(&GenConfig::large(5));
}

#[test]
fn thinly_dump_of_every_sample_equals_the_real_dump_in_both_formats() {
    if !have_tools(&["thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let images = sample_images(dir.path());
    for image in &images {
        for args in [&[][..], &["-f", "human_readable"][..], &["--skip-mappings"][..]] {
            let mut real_args: Vec<&str> = args.to_vec();
            real_args.push(s(image));
            let real = run("thin_dump", &real_args);
            ok(&real, "thin_dump");
            let mut ours_args = vec!["dump"];
            ours_args.extend_from_slice(&real_args);
            let ours = thinly_run(&ours_args);
            ok(&ours, "thinly dump");
            assert!(ours.stdout == real.stdout, "{image:?} {args:?}: dumps differ");
        }
    }
    assert!(images.len() >= 5 || samples_dir().is_none(), "expected the sample images");
}

#[test]
fn thinly_restore_of_every_sample_dump_passes_real_check_and_dumps_back() {
    if !have_tools(&["thin_dump", "thin_check"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for image in sample_images(dir.path()) {
        let real = run("thin_dump", &[s(&image)]);
        ok(&real, "thin_dump");
        let xml = dir.path().join("sample.xml");
        std::fs::write(&xml, &real.stdout).expect("write");
        let meta = dir.path().join("restored.meta");
        sized_file(&meta, 8 << 20);
        ok(&thinly_run(&["restore", "-i", s(&xml), "-o", s(&meta)]), "thinly restore");
        ok(&run("thin_check", &[s(&meta)]), "thin_check");
        let again = run("thin_dump", &[s(&meta)]);
        assert!(again.stdout == real.stdout, "{image:?}: restore then dump differs");
    }
}
