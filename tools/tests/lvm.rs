//! The calls LVM makes (lvconvert --repair, thin_check's default options, `-V` parsing)
//! and 1.x's command-line forms (multi-call, option conflicts, root overrides), run side
//! by side with the installed thin-provisioning-tools 0.9.0 where the behaviour is
//! shared, and against 1.x's documented behaviour (its thin_check/thin_delta/thin_repair
//! sources and man pages) where only 1.x has it.

mod common;

use std::path::{Path, PathBuf};

use common::image::Image;
use common::*;
use thinly_engine::format::checksum::BlockKind;
use thinly_engine::fsck::gen::GenConfig;

/// A small generated pool restored by thinly (the real tools check it where present).
fn pool(dir: &Path, seed: u64) -> PathBuf {
    let (xml, meta) = (dir.join("gen.xml"), dir.join("gen.meta"));
    let (_, bytes) = write_generated_xml(&GenConfig::small(seed), &xml);
    sized_file(&meta, bytes);
    ok(&thinly_run(&["restore", "-i", s(&xml), "-o", s(&meta)]), "thinly restore");
    meta
}

/// `dir/bin/NAME` → the binary under test, for each name.
fn links(dir: &Path, names: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for name in names {
        std::os::unix::fs::symlink(thinly(), bin.join(name)).expect("symlink");
    }
    bin
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn thin_repair_accepts_the_empty_argument_lvconvert_passes_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path(), 1);
    let bytes = std::fs::metadata(&meta).expect("stat").len();
    let bin = links(dir.path(), &["thin_repair"]);
    let out = dir.path().join("out.meta");
    // lvconvert --repair runs `thin_repair "" -i META -o NEW` (thin_repair_options = [ "" ]).
    for argv in [vec!["", "-i", s(&meta), "-o", s(&out)], vec!["-i", s(&meta), "-o", s(&out), ""]] {
        sized_file(&out, bytes);
        ok(&run(bin.join("thin_repair"), &argv), "thin_repair with an empty argument");
        assert_eq!(
            stdout(&thinly_run(&["dump", s(&out)])),
            stdout(&thinly_run(&["dump", s(&meta)]))
        );
        if have_tools(&["thin_repair"]) {
            // 0.9.0 accepts it too.
            sized_file(&out, bytes);
            ok(&run("thin_repair", &argv), "the real thin_repair with an empty argument");
        }
    }
    let o = run(bin.join("thin_repair"), &["-i", s(&meta), "-o", s(&out), "stray"]);
    assert_eq!(o.status.code(), Some(2), "a non-empty stray argument is a usage error");
}

#[test]
fn version_under_a_thin_name_is_the_tools_version_lvm_parses_and_thinly_keeps_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["thin_check", "thin_dump", "thin_repair", "thin_restore", "thin_metadata_size"];
    let bin = links(dir.path(), &names);
    for name in names {
        for flag in ["-V", "--version"] {
            let o = run(bin.join(name), &[flag]);
            ok(&o, &format!("{name} {flag}"));
            let line = stdout(&o);
            // lvm2 reads the first line with "%u.%u.%u" and enables 1.x options from 1.0.
            let v: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .take(3)
                .map(|n| n.parse().expect("a number"))
                .collect();
            assert!(v.len() == 3 && v[0] >= 1, "{name} {flag}: {line:?}");
            assert!(line.contains("thinly"), "{name} {flag}: thinly's version follows");
        }
    }
    let o = thinly_run(&["--version"]);
    ok(&o, "thinly --version");
    assert!(stdout(&o).starts_with("thinly "), "thinly --version: {}", stdout(&o));
}

#[test]
fn the_multi_call_forms_run_the_named_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path(), 2);
    let bin = links(dir.path(), &["thin_dump", "pdata_tools", "lvm-thin_dump"]);
    let want = run(bin.join("thin_dump"), &[s(&meta)]);
    ok(&want, "thin_dump");
    for (prog, args) in [
        (thinly(), vec!["thin_dump", s(&meta)]),
        (bin.join("pdata_tools"), vec!["thin_dump", s(&meta)]),
        (bin.join("pdata_tools"), vec!["/usr/sbin/thin_dump", s(&meta)]),
        (bin.join("lvm-thin_dump"), vec![s(&meta)]),
    ] {
        let o = run(&prog, &args);
        ok(&o, &format!("{prog:?} {args:?}"));
        assert!(o.stdout == want.stdout, "{prog:?} {args:?} differs from thin_dump");
    }
    let o = run(bin.join("pdata_tools"), &["thin_check", "-q", s(&meta)]);
    ok(&o, "pdata_tools thin_check");
}

#[test]
fn option_combinations_1x_refuses_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path(), 3);
    let before = std::fs::read(&meta).expect("read");
    let refused: [&[&str]; 6] = [
        &["--auto-repair", "-m"],
        &["--auto-repair", "--skip-mappings"],
        &["--auto-repair", "--super-block-only"],
        &["--auto-repair", "--ignore-non-fatal-errors"],
        &["--clear-needs-check-flag", "-m"],
        &["--clear-needs-check-flag", "--metadata-snap"],
    ];
    for args in refused {
        let mut a = vec!["check"];
        a.extend_from_slice(args);
        a.push(s(&meta));
        assert_eq!(thinly_run(&a).status.code(), Some(2), "{args:?}");
    }
    // 1.x: "cannot perform repair outside the actual metadata" (a failure, not usage).
    for args in [
        ["--clear-needs-check-flag", "--override-mapping-root", "5"],
        ["--auto-repair", "--override-details-root", "5"],
    ] {
        let mut a = vec!["check"];
        a.extend_from_slice(&args);
        a.push(s(&meta));
        let o = thinly_run(&a);
        assert!(!o.status.success(), "{args:?}");
    }
    assert!(std::fs::read(&meta).expect("read") == before, "a refused check wrote");
}

#[test]
fn clear_needs_check_flag_mends_leaked_metadata_blocks_and_exits_zero_as_1x() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path(), 4);
    let mut img = Image::load(&meta);
    let last = img.bytes.len() as u64 / 4096 - 1;
    let b = img.metadata_bitmap();
    img.set_bitmap_entry(b, last as usize, 1); // a leaked metadata block
    img.block_mut(0)[4] = 1; // NEEDS_CHECK
    img.reseal(0, BlockKind::Superblock);
    img.save(&meta);
    assert!(!thinly_run(&["check", "-q", s(&meta)]).status.success(), "the leak is seen");
    if have_tools(&["thin_check"]) {
        // 0.9.0 only reports the leak and keeps failing; 1.x mends it.
        let copy = dir.path().join("copy.meta");
        std::fs::copy(&meta, &copy).expect("copy");
        let real = run("thin_check", &["-q", "--clear-needs-check-flag", s(&copy)]);
        eprintln!("0.9.0 thin_check --clear-needs-check-flag on a leak: {:?}", real.status);
    }
    // LVM's default thin_check_options.
    ok(&thinly_run(&["check", "-q", "--clear-needs-check-flag", s(&meta)]), "LVM's check");
    ok(&thinly_run(&["check", s(&meta)]), "a plain check afterwards");
    if have_tools(&["thin_check", "thin_dump"]) {
        ok(&run("thin_check", &[s(&meta)]), "the real thin_check afterwards");
        let dump = stdout(&run("thin_dump", &[s(&meta)]));
        assert!(dump.starts_with("<superblock") && !dump.contains("flags=\"1\""), "{dump:.200}");
    }
}

/// The top-level and details roots of `meta`.
fn roots(meta: &Path) -> (u64, u64) {
    let sb = Image::load(meta).sb();
    (sb.data_mapping_root.0, sb.device_details_root.0)
}

#[test]
fn check_override_roots_check_the_named_trees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path(), 5);
    let (top, details) = roots(&meta);
    let (top_s, details_s) = (top.to_string(), details.to_string());
    // The superblock's own roots: the same verdict as without the options.
    ok(&thinly_run(&["check", "-q", "--override-mapping-root", &top_s, s(&meta)]), "mapping");
    ok(&thinly_run(&["check", "-q", "--override-details-root", &details_s, s(&meta)]), "details");
    // Swapped: neither tree has the shape the other needs.
    for opt in ["--override-mapping-root", "--override-details-root"] {
        let other = if opt.contains("mapping") { &details_s } else { &top_s };
        let o = thinly_run(&["check", "-q", opt, other, s(&meta)]);
        assert_eq!(o.status.code(), Some(64), "{opt} {other}");
    }
    if have_tools(&["thin_check"]) {
        // 0.9.0 has --override-mapping-root: the same verdicts.
        for (root, passes) in [(&top_s, true), (&details_s, false)] {
            let a = ["-q", "--override-mapping-root", root.as_str(), s(&meta)];
            assert_eq!(run("thin_check", &a).status.success(), passes, "thin_check {a:?}");
        }
    }
}

#[test]
fn thin_delta_root1_and_root2_compare_trees_by_root_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path(), 6);
    let img = Image::load(&meta);
    let devs = img.devices();
    let ((id1, r1), (id2, r2)) = (devs[0], devs[devs.len() - 1]);
    let by_id =
        thinly_run(&["delta", "--snap1", &id1.to_string(), "--snap2", &id2.to_string(), s(&meta)]);
    ok(&by_id, "delta by id");
    let by_root =
        thinly_run(&["delta", "--root1", &r1.to_string(), "--root2", &r2.to_string(), s(&meta)]);
    ok(&by_root, "delta by root");
    // 1.x names the roots: <diff left_root="…" right_root="…">.
    let want = stdout(&by_id).replace(
        &format!("<diff left=\"{id1}\" right=\"{id2}\">"),
        &format!("<diff left_root=\"{r1}\" right_root=\"{r2}\">"),
    );
    assert_eq!(stdout(&by_root), want);
    let mixed =
        thinly_run(&["delta", "--snap1", &id1.to_string(), "--root2", &r2.to_string(), s(&meta)]);
    ok(&mixed, "delta mixed");
    let o = thinly_run(&["delta", "--snap1", "1", "--root1", "5", "--snap2", "2", s(&meta)]);
    assert_eq!(o.status.code(), Some(2), "--snap1 with --root1");
    if have_tools(&["thin_delta"]) {
        let real = run(
            "thin_delta",
            &["--snap1", &id1.to_string(), "--snap2", &id2.to_string(), s(&meta)],
        );
        assert_eq!(stdout(&real), stdout(&by_id), "by id, side by side with 0.9.0");
    }
}

#[test]
fn check_of_an_unusable_metadata_snapshot_fails_without_printing_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(meta) =
        sample_images(dir.path()).into_iter().find(|p| s(p).ends_with("generated.bin"))
    else {
        return;
    };
    let held = Image::load(&meta).sb().held_root.0;
    assert!(held != 0, "the sample holds a metadata snapshot");
    let o = thinly_run(&["check", "-m", s(&meta)]);
    ok(&o, "check -m of the intact snapshot");
    assert!(stdout(&o).contains("TRANSACTION_ID="));
    let mut img = Image::load(&meta);
    img.flip(held, 100);
    img.save(&meta);
    let o = thinly_run(&["check", "-m", s(&meta)]);
    assert_eq!(o.status.code(), Some(64), "check -m of a corrupted snapshot");
    assert!(o.stdout.is_empty(), "figures printed: {}", stdout(&o));
    // Without -m the live metadata's figures still come first (1.x prints them, then
    // fails on the snapshot).
    let o = thinly_run(&["check", s(&meta)]);
    assert!(!o.status.success() && stdout(&o).contains("TRANSACTION_ID="));
}
