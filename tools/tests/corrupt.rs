//! `thinly check` against the real thin_check 0.9.0 on a corpus of damaged images:
//! both must call each image clean or not alike, except for the classes 0.9.0 does not
//! check (spec §7: mapped_blocks, data-block counts, the details/mapping device sets),
//! where thinly follows 1.x and the expected 0.9.0 verdict is asserted as documented.

mod common;

use std::path::Path;

use common::image::Image;
use common::*;
use thinly_engine::format::checksum::BlockKind;
use thinly_engine::format::node;
use thinly_engine::fsck::gen::GenConfig;

/// What the real 0.9.0 is expected to say relative to thinly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Both fail.
    BothFail,
    /// Both pass (e.g. damage in a free block).
    BothPass,
    /// A class 0.9.0 does not check: thinly fails, 0.9.0 passes.
    OnlyThinlyFails,
}

type Corruption = (&'static str, Expect, fn(&mut Image));

fn corruptions() -> Vec<Corruption> {
    vec![
        ("bit flip in the superblock", Expect::BothFail, |i| i.flip(0, 40)),
        ("bit flip in the top-level tree", Expect::BothFail, |i| {
            let r = i.sb().data_mapping_root.0;
            i.flip(r, 2000)
        }),
        ("bit flip in the details tree", Expect::BothFail, |i| {
            let r = i.sb().device_details_root.0;
            i.flip(r, 100)
        }),
        ("bit flip in a bottom-level internal node", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            i.flip(r, 40)
        }),
        ("bit flip in a mapping leaf", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            let (l, _) = i.first_leaf(r);
            i.flip(l, 3000)
        }),
        ("bit flip in the metadata index block", Expect::BothFail, |i| {
            let b = i.sb().metadata_sm_root.bitmap_root.0;
            i.flip(b, 20)
        }),
        ("bit flip in a metadata bitmap", Expect::BothFail, |i| {
            let b = i.metadata_bitmap();
            i.flip(b, 17)
        }),
        ("bit flip in the data space map index tree", Expect::BothFail, |i| {
            let b = i.sb().data_sm_root.bitmap_root.0;
            i.flip(b, 40)
        }),
        ("bit flip in the metadata reference count tree", Expect::BothFail, |i| {
            let b = i.sb().metadata_sm_root.ref_count_root.0;
            i.flip(b, 24)
        }),
        ("zeroed mapping leaf", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            let (l, _) = i.first_leaf(r);
            i.zero(l)
        }),
        ("zeroed top-level root", Expect::BothFail, |i| {
            let r = i.sb().data_mapping_root.0;
            i.zero(r)
        }),
        ("zeroed metadata bitmap", Expect::BothFail, |i| {
            let b = i.metadata_bitmap();
            i.zero(b)
        }),
        ("zeroed free block", Expect::BothPass, |i| {
            let last = i.bytes.len() as u64 / 4096 - 1;
            i.zero(last)
        }),
        ("garbage in a free block", Expect::BothPass, |i| {
            let last = i.bytes.len() as u64 / 4096 - 2;
            i.block_mut(last).fill(0x5a)
        }),
        ("metadata count too low (in-use block marked free)", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            let b = i.metadata_bitmap();
            i.set_bitmap_entry(b, r as usize, 0)
        }),
        ("metadata count too high", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            let b = i.metadata_bitmap();
            i.set_bitmap_entry(b, r as usize, 2)
        }),
        ("leaked metadata block", Expect::BothFail, |i| {
            let last = i.bytes.len() as u64 / 4096 - 1;
            let b = i.metadata_bitmap();
            i.set_bitmap_entry(b, last as usize, 1)
        }),
        ("keys out of order in a mapping leaf", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            let (l, _) = i.first_leaf(r);
            let blk = i.block_mut(l);
            let (a, b) = (node::key(blk, 1), node::key(blk, 2));
            node::set_key(blk, 1, b);
            node::set_key(blk, 2, a);
            i.reseal(l, BlockKind::Node)
        }),
        ("underfull non-root mapping leaf", Expect::BothFail, |i| {
            let (_, r) = i.deep_device();
            let (l, _) = i.first_leaf(r);
            i.set_nr_entries(l, 83)
        }),
        ("device removed from the top-level tree", Expect::BothFail, |i| {
            let top = i.sb().data_mapping_root.0;
            let (leaf, _) = i.first_leaf(top);
            let n = node::nr_entries(i.block(leaf));
            node::remove_at(i.block_mut(leaf), n - 1);
            i.reseal(leaf, BlockKind::Node)
        }),
        ("wrong mapped_blocks", Expect::OnlyThinlyFails, |i| {
            let d = i.sb().device_details_root.0;
            let (leaf, _) = i.first_leaf(d);
            let blk = i.block_mut(leaf);
            let off = 32 + 8 * node::max_entries_of(blk);
            blk[off] ^= 1;
            i.reseal(leaf, BlockKind::Node)
        }),
        ("device removed from the details tree", Expect::OnlyThinlyFails, |i| {
            let d = i.sb().device_details_root.0;
            let (leaf, _) = i.first_leaf(d);
            let n = node::nr_entries(i.block(leaf));
            node::remove_at(i.block_mut(leaf), n - 1);
            i.reseal(leaf, BlockKind::Node)
        }),
        ("data block count too low", Expect::OnlyThinlyFails, |i| {
            let b = i.data_bitmap();
            let j = (0..16320).find(|&j| i.bitmap_entry(b, j) == 1).expect("a used data block");
            i.set_bitmap_entry(b, j, 0)
        }),
    ]
}

fn verdict(out: &std::process::Output) -> bool {
    assert!(
        // 0.9.0 fails with 1, thinly (as 1.x) with 64.
        matches!(out.status.code(), Some(0 | 1 | 64)),
        "exit {:?}",
        out.status
    );
    out.status.success()
}

fn check_corpus(base: &Path, dir: &Path, label: &str) -> (usize, usize) {
    let (mut agree, mut documented) = (0, 0);
    let clean = Image::load(base);
    for (name, expect, corrupt) in corruptions() {
        let mut img = Image { bytes: clean.bytes.clone() };
        corrupt(&mut img);
        let path = dir.join("corrupt.meta");
        img.save(&path);
        let real = verdict(&run("thin_check", &["-q", s(&path)]));
        let ours_out = thinly_run(&["check", s(&path)]);
        let ours = verdict(&ours_out);
        let why = String::from_utf8_lossy(&ours_out.stderr);
        match expect {
            Expect::BothFail => assert!(
                !real && !ours,
                "{label}: {name}: real passes={real}, thinly passes={ours}\n{why}"
            ),
            Expect::BothPass => assert!(
                real && ours,
                "{label}: {name}: real passes={real}, thinly passes={ours}\n{why}"
            ),
            Expect::OnlyThinlyFails => assert!(
                real && !ours,
                "{label}: {name}: real passes={real}, thinly passes={ours}\n{why}"
            ),
        }
        if expect == Expect::OnlyThinlyFails {
            documented += 1;
        } else {
            agree += 1;
        }
    }
    (agree, documented)
}

/// A small generated pool written by the real `thin_restore`: the clean base each test damages.
fn restored_pool(dir: &std::path::Path, seed: u64) -> std::path::PathBuf {
    let (xml, meta) = (dir.join("gen.xml"), dir.join("gen.meta"));
    let (_, bytes) = write_generated_xml(&GenConfig::small(seed), &xml);
    sized_file(&meta, bytes);
    ok(&run("thin_restore", &["-i", s(&xml), "-o", s(&meta)]), "thin_restore");
    meta
}

#[test]
fn thinly_check_agrees_with_thin_check_on_every_corruption_class() {
    if !have_tools(&["thin_check", "thin_restore"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = restored_pool(dir.path(), 3);
    ok(&run("thin_check", &[s(&meta)]), "thin_check of the clean base");
    ok(&thinly_run(&["check", s(&meta)]), "thinly check of the clean base");
    let (agree, documented) = check_corpus(&meta, dir.path(), "restored pool");
    eprintln!("corruption corpus: {agree} classes agree, {documented} are 1.x-only checks");
}

#[test]
fn leaks_are_non_fatal_and_pass_with_ignore_non_fatal_errors_in_both() {
    if !have_tools(&["thin_check", "thin_restore"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = restored_pool(dir.path(), 4);
    let mut img = Image::load(&meta);
    let last = img.bytes.len() as u64 / 4096 - 1;
    let b = img.metadata_bitmap();
    img.set_bitmap_entry(b, last as usize, 1);
    img.save(&meta);
    for args in [&["-q"][..], &["-q", "--ignore-non-fatal-errors"][..]] {
        let mut a = args.to_vec();
        a.push(s(&meta));
        let real = run("thin_check", &a).status.success();
        let mut t = vec!["check"];
        t.extend_from_slice(&a);
        let ours = thinly_run(&t).status.success();
        assert_eq!(ours, real, "thin_check {args:?}");
    }
}

#[test]
fn super_block_only_and_skip_mappings_limit_what_is_checked() {
    if !have_tools(&["thin_check", "thin_restore"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = restored_pool(dir.path(), 5);
    let mut img = Image::load(&meta);
    let (_, r) = img.deep_device();
    let (l, _) = img.first_leaf(r);
    img.zero(l);
    img.save(&meta);
    for (args, passes) in
        [(&["--super-block-only"][..], true), (&["--skip-mappings"][..], true), (&[][..], false)]
    {
        let mut a = vec!["-q"];
        a.extend_from_slice(args);
        a.push(s(&meta));
        let real = run("thin_check", &a).status.success();
        let mut t = vec!["check"];
        t.extend_from_slice(&a);
        let ours = thinly_run(&t).status.success();
        assert_eq!((real, ours), (passes, passes), "{args:?}");
    }
}

#[test]
fn clear_needs_check_flag_clears_it_only_on_clean_metadata() {
    if !have_tools(&["thin_check", "thin_restore", "thin_dump"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = restored_pool(dir.path(), 6);
    let mut img = Image::load(&meta);
    img.block_mut(0)[4] = 1; // flags: NEEDS_CHECK
    img.reseal(0, BlockKind::Superblock);
    img.save(&meta);
    let flags = |p: &Path| {
        let out = run("thin_dump", &[s(p)]);
        String::from_utf8_lossy(&out.stdout).contains("flags=\"1\"")
    };
    assert!(flags(&meta));
    ok(&thinly_run(&["check", "-q", s(&meta)]), "check without clearing");
    assert!(flags(&meta), "a plain check must not write");
    ok(
        &thinly_run(&["check", "--clear-needs-check-flag", s(&meta)]),
        "check --clear-needs-check-flag",
    );
    assert!(!flags(&meta), "the flag is cleared");
    ok(&run("thin_check", &[s(&meta)]), "thin_check after clearing");
}

#[test]
fn auto_repair_fixes_leaks_and_needs_check_but_refuses_fatal_damage() {
    if !have_tools(&["thin_check", "thin_restore"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = restored_pool(dir.path(), 6);
    let clean = std::fs::read(&meta).unwrap();
    // A leaked metadata block, a metadata count too high, and needs_check.
    let mut img = Image::load(&meta);
    let last = img.bytes.len() as u64 / 4096 - 1;
    let b = img.metadata_bitmap();
    img.set_bitmap_entry(b, last as usize, 1);
    let (_, r) = img.deep_device();
    img.set_bitmap_entry(b, r as usize, 2);
    img.block_mut(0)[4] = 1; // NEEDS_CHECK
    img.reseal(0, BlockKind::Superblock);
    img.save(&meta);
    assert!(!thinly_run(&["check", "-q", s(&meta)]).status.success());
    assert!(String::from_utf8_lossy(&run("thin_dump", &[s(&meta)]).stdout).contains("flags=\"1\""));
    ok(&thinly_run(&["check", "--auto-repair", s(&meta)]), "thinly check --auto-repair");
    ok(&thinly_run(&["check", s(&meta)]), "thinly check after the repair");
    ok(&run("thin_check", &[s(&meta)]), "the real thin_check after the repair");
    assert!(
        String::from_utf8_lossy(&run("thin_dump", &[s(&meta)]).stdout).contains("flags=\"0\""),
        "needs_check cleared"
    );
    // Fatal damage (a count too low) is left to thin_repair.
    std::fs::write(&meta, &clean).unwrap();
    let mut img = Image::load(&meta);
    let (_, r) = img.deep_device();
    let b = img.metadata_bitmap();
    img.set_bitmap_entry(b, r as usize, 0);
    img.save(&meta);
    let out = thinly_run(&["check", "--auto-repair", s(&meta)]);
    assert_eq!(out.status.code(), Some(64), "fatal problems still fail");
}
