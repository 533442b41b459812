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

/// Hundreds of devices: many origins, a long chain and many branch snapshots.
fn many_devices() -> GenConfig {
    GenConfig {
        nr_origins: 60,
        chain_depth: 180,
        nr_branch_snaps: 80,
        virt_blocks: 3_000,
        origin_blocks: 600,
        writes_per_snapshot: 20,
        ..GenConfig::small(21)
    }
}

#[test]
fn real_restore_then_thinly_dump_reproduces_a_pool_of_hundreds_of_devices() {
    real_restore_then_thinly_dump(&many_devices());
}

#[test]
fn thinly_restore_of_a_pool_of_hundreds_of_devices_passes_real_check_and_dump() {
    thinly_restore_then_real_check_and_dump(&many_devices());
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
    assert!(images.len() >= 5, "expected the sample images");
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

/// 1.x XML with `<def>`/`<ref>` (shared leaves): thinly restore shares them, the real
/// 0.9.0 thin_check accepts the result, and its dump is the expanded XML.
#[test]
fn thinly_restore_of_1x_xml_with_shared_defs_passes_real_check() {
    use thinly_engine::fsck::ir::{Device, Item, Metadata, Run, SharedDef, Superblock, ThinDevice};
    use thinly_engine::fsck::xml::{to_xml_string, Dialect};
    if !have_tools(&["thin_check", "thin_dump"]) {
        return;
    }
    let run_of = |o: u64, d: u64, len: u64| Run { origin_begin: o, data_begin: d, len, time: 0 };
    let defs = vec![
        SharedDef {
            name: "base".into(),
            runs: (0..2000).map(|i| run_of(3 * i, 7 * i, 2)).collect(),
        },
        SharedDef { name: "tail".into(), runs: vec![run_of(100_000, 50_000, 30)] },
    ];
    let dev = |id: u32, items: Vec<Item>| ThinDevice {
        details: Device {
            dev_id: id,
            mapped_blocks: 0,
            transaction: 1,
            creation_time: id,
            snap_time: 9,
        },
        items,
    };
    let own = |o: u64, d: u64, n: u64| -> Vec<Item> {
        (0..n).map(|i| Item::Single { origin_block: o + i, data_block: d + i, time: 5 }).collect()
    };
    let md = Metadata {
        superblock: Superblock {
            time: 9,
            transaction: 3,
            data_block_size: 128,
            nr_data_blocks: 60_000,
            ..Superblock::default()
        },
        defs,
        devices: (1..=20)
            .map(|id| {
                let mut items = vec![Item::Ref("base".into())];
                items.extend(own(
                    6100 + u64::from(id) * 10,
                    20_000 + u64::from(id) * 10,
                    u64::from(id % 3),
                ));
                if id % 2 == 0 {
                    items.push(Item::Ref("tail".into()));
                }
                dev(id, items)
            })
            .collect(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (xml, meta) = (dir.path().join("v1.xml"), dir.path().join("v1.meta"));
    std::fs::write(&xml, to_xml_string(&md, Dialect::V1).expect("xml")).expect("write");
    sized_file(&meta, 16 << 20);
    ok(&thinly_run(&["restore", "-i", s(&xml), "-o", s(&meta)]), "thinly restore");
    ok(&run("thin_check", &[s(&meta)]), "thin_check");
    let mut want = md.normalised().expect("normalise");
    for d in &mut want.devices {
        d.details.mapped_blocks = d.items.iter().filter_map(Item::run).map(|r| r.len).sum();
    }
    // The 1.x dialect always writes a version (2 when the IR has none).
    want.superblock.version = Some(2);
    let real = run("thin_dump", &[s(&meta)]);
    ok(&real, "thin_dump");
    let expected = to_xml_string(&want, Dialect::V09).expect("xml");
    assert!(real.stdout == expected.as_bytes(), "thin_dump of the restored defs differs");
    // Shared: 20 devices × 4030 mappings in far fewer blocks than 20 copies would take.
    let ls = run("thin_check", &[s(&meta)]);
    let free: u64 = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("METADATA_FREE_BLOCKS="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(free > 0);
}

#[test]
fn dump_options_dev_id_metadata_snap_and_output_file_match_the_real_tool() {
    if !have_tools(&["thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for image in sample_images(dir.path()) {
        let p = s(&image);
        for args in [
            vec!["--dev-id", "2", p],
            vec!["-m", p],
            vec!["-m8", p],
            vec!["--dev-id", "1", "--skip-mappings", p],
        ] {
            let real = run("thin_dump", &args);
            let mut ours_args = vec!["dump"];
            ours_args.extend_from_slice(&args);
            let ours = thinly_run(&ours_args);
            assert_eq!(ours.status.success(), real.status.success(), "{args:?}");
            if real.status.success() {
                assert!(ours.stdout == real.stdout, "{args:?}: dumps differ");
            }
        }
        let out = dir.path().join("dump.xml");
        ok(&thinly_run(&["dump", "-o", s(&out), p]), "dump -o");
        assert!(
            std::fs::read(&out).expect("read") == run("thin_dump", &[p]).stdout,
            "{p}: -o differs"
        );
    }
}
