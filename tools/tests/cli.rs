//! Every tool, under `thinly <tool>` and under its thin_* name (a symlink): --help,
//! --version, bad options, missing and unreadable inputs give a message and the
//! documented exit code (0 help/version, 2 bad command line, 64 failure), never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const TOOLS: [(&str, &str); 9] = [
    ("thin_check", "check"),
    ("thin_dump", "dump"),
    ("thin_restore", "restore"),
    ("thin_repair", "repair"),
    ("thin_ls", "ls"),
    ("thin_delta", "delta"),
    ("thin_rmap", "rmap"),
    ("thin_trim", "trim"),
    ("thin_metadata_size", "metadata-size"),
];

/// A directory of thin_* symlinks to the binary under test.
fn symlinks(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for (name, _) in TOOLS {
        std::os::unix::fs::symlink(thinly(), bin.join(name)).expect("symlink");
    }
    bin
}

fn no_panic(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert!(out.status.code().is_some(), "{what} died of a signal");
}

/// Arguments that make each tool read `input` (a valid invocation otherwise).
fn reading(tool: &str, input: &str, out: &str) -> Vec<String> {
    let v: Vec<&str> = match tool {
        "check" | "dump" | "ls" => vec![input],
        "restore" | "repair" => vec!["-i", input, "-o", out],
        "delta" => vec!["--snap1", "1", "--snap2", "2", input],
        "rmap" => vec!["--region", "0..10", input],
        "trim" => vec!["--metadata-dev", input, "--data-dev", out, "--dry-run"],
        _ => vec!["-b", "64k", "-s", "1t", "-m", input],
    };
    v.into_iter().map(String::from).collect()
}

#[test]
fn help_and_version_exit_zero_under_both_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = symlinks(dir.path());
    for (name, sub) in TOOLS {
        for flag in ["--help", "-h", "--version", "-V"] {
            let a = run(bin.join(name), &[flag]);
            let b = thinly_run(&[sub, flag]);
            for (out, what) in [(&a, name), (&b, sub)] {
                no_panic(out, what);
                assert_eq!(out.status.code(), Some(0), "{what} {flag}");
                assert!(!out.stdout.is_empty(), "{what} {flag} printed nothing");
            }
        }
    }
    ok(&thinly_run(&["--help"]), "thinly --help");
    ok(&thinly_run(&["--version"]), "thinly --version");
}

#[test]
fn bad_options_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = symlinks(dir.path());
    for (name, sub) in TOOLS {
        let want = 2;
        let a = run(bin.join(name), &["--no-such-option", "x"]);
        let b = thinly_run(&[sub, "--no-such-option", "x"]);
        for (out, what) in [(&a, name), (&b, sub)] {
            no_panic(out, what);
            assert_eq!(out.status.code(), Some(want), "{what} with a bad option");
            assert!(!out.stderr.is_empty(), "{what}: no message");
        }
    }
    assert_eq!(thinly_run(&["no-such-tool"]).status.code(), Some(2));
    assert_eq!(thinly_run(&[]).status.code(), Some(2));
}

#[test]
fn missing_unreadable_and_wrong_inputs_fail_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.meta");
    sized_file(&out, 4 << 20);
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"abc").expect("write");
    let zeros = dir.path().join("zeros.meta");
    sized_file(&zeros, 1 << 20);
    let xml = dir.path().join("not-binary.meta");
    std::fs::write(&xml, "<superblock uuid=\"\">\n".repeat(300)).expect("write");
    let garbage = dir.path().join("garbage.meta");
    std::fs::write(
        &garbage,
        (0..1u32 << 20).map(|i| (i.wrapping_mul(7919) % 251) as u8).collect::<Vec<u8>>(),
    )
    .expect("write");
    let missing = dir.path().join("does-not-exist");
    for (_, sub) in TOOLS.iter().filter(|t| t.1 != "metadata-size") {
        for input in [&missing, &tiny, &zeros, &xml, &garbage, &dir.path().to_path_buf()] {
            let args = reading(sub, s(input), s(&out));
            let mut argv = vec![*sub];
            argv.extend(args.iter().map(String::as_str));
            let o = thinly_run(&argv);
            no_panic(&o, sub);
            if *sub == "restore" && (input == &zeros || input == &garbage) {
                // Not XML: a parse error.
                assert_eq!(o.status.code(), Some(64), "{sub} {input:?}");
                continue;
            }
            assert_eq!(
                o.status.code(),
                Some(64),
                "{sub} {input:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(!o.stderr.is_empty(), "{sub} {input:?}: no message");
        }
    }
}

#[test]
fn restore_and_repair_refuse_a_missing_or_tiny_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = dir.path().join("in.xml");
    std::fs::write(&xml, "<superblock uuid=\"\" time=\"0\" transaction=\"0\" data_block_size=\"128\" nr_data_blocks=\"10\">\n</superblock>\n").expect("write");
    let small = dir.path().join("small.meta");
    sized_file(&small, 8192);
    for out in [dir.path().join("absent.meta"), small] {
        let o = thinly_run(&["restore", "-i", s(&xml), "-o", s(&out)]);
        no_panic(&o, "restore");
        assert_eq!(o.status.code(), Some(64));
    }
    let o = thinly_run(&["restore", "-i", s(&xml)]);
    assert_eq!(o.status.code(), Some(2), "restore without -o");
}

/// Every thin_* name in `dir`, as (name, where its link resolves to).
fn resolved_links(dir: &Path) -> Vec<(String, Option<PathBuf>)> {
    TOOLS.iter().map(|(name, _)| (name.to_string(), dir.join(name).canonicalize().ok())).collect()
}

#[test]
fn install_links_makes_every_thin_name_a_working_link_to_the_binary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sbin");
    std::fs::create_dir(&dir).expect("mkdir");
    let exe = thinly().canonicalize().expect("binary");
    // Twice: a second run replaces the links it made.
    for _ in 0..2 {
        ok(&thinly_run(&["install-links", s(&dir)]), "install-links");
        for (name, target) in resolved_links(&dir) {
            assert_eq!(target.as_deref(), Some(exe.as_path()), "{name}");
        }
    }
    let o = run(dir.join("thin_check"), &["-V"]);
    ok(&o, "thin_check -V through the link");
    let o = run(dir.join("thin_metadata_size"), &["-b", "64k", "-s", "1t", "-m", "1000"]);
    ok(&o, "thin_metadata_size through the link");
}

#[test]
fn install_links_defaults_to_the_directory_of_the_binary_it_runs_as() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("thinly");
    std::fs::copy(thinly(), &copy).expect("copy the binary");
    ok(&run(&copy, &["install-links"]), "install-links with no DIR");
    let exe = copy.canonicalize().expect("copy");
    for (name, target) in resolved_links(tmp.path()) {
        assert_eq!(target.as_deref(), Some(exe.as_path()), "{name}");
    }
}

#[test]
fn install_links_leaves_real_tools_alone_unless_forced_and_never_links_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("thin_dump");
    std::fs::write(&real, "#!/bin/sh\necho the real thin_dump\n").expect("write");
    let o = thinly_run(&["install-links", s(tmp.path())]);
    no_panic(&o, "install-links");
    assert_eq!(o.status.code(), Some(1), "a real tool in the way is refused");
    assert_eq!(std::fs::read(&real).expect("read"), b"#!/bin/sh\necho the real thin_dump\n");
    let names: Vec<_> = std::fs::read_dir(tmp.path()).expect("ls").collect();
    assert_eq!(names.len(), 1, "a refusal makes no link at all");
    ok(&thinly_run(&["install-links", "--force", s(tmp.path())]), "install-links --force");
    let exe = thinly().canonicalize().expect("binary");
    for (name, target) in resolved_links(tmp.path()) {
        assert_eq!(target.as_deref(), Some(exe.as_path()), "{name}");
    }
    // A directory that does not exist gets no links (and no panic).
    let o = thinly_run(&["install-links", s(&tmp.path().join("absent"))]);
    no_panic(&o, "install-links into nothing");
    assert_eq!(o.status.code(), Some(1));
}

/// Runs `thinly ARGS` with stdout and stderr on a pseudo-terminal (util-linux `script`);
/// None (a loud skip; a failure under CI) without `script`.
fn on_a_terminal(args: &[&str]) -> Option<String> {
    if !have_tools(&["script"]) {
        return None;
    }
    let command = std::iter::once(s(&thinly()).to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let o = run("script", &["-qfec", &command, "/dev/null"]);
    ok(&o, "script");
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn long_tools_show_a_bar_with_its_total_on_a_terminal_and_nothing_elsewhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pool = tmp.path().join("p");
    ok(&thinly_run(&["pool", "create", "--pool", s(&pool), "--size", "4G"]), "pool create");
    let meta = pool.join("metadata");
    let o = thinly_run(&["check", s(&meta)]);
    ok(&o, "check");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("checking metadata ["), "a bar on a pipe: {err}");
    let free: u64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("METADATA_FREE_BLOCKS="))
        .and_then(|n| n.trim().parse().ok())
        .expect("METADATA_FREE_BLOCKS");
    let in_use = std::fs::metadata(&meta).expect("stat").len() / 4096 - free;
    let Some(shown) = on_a_terminal(&["check", s(&meta)]) else { return };
    assert!(shown.contains(&format!("/{in_use} blocks")), "no bar of {in_use} blocks: {shown}");
    let xml = tmp.path().join("p.xml");
    ok(&thinly_run(&["dump", s(&meta), "-o", s(&xml)]), "dump");
    let shown = on_a_terminal(&["dump", s(&meta), "-o", s(&xml)]).expect("script");
    assert!(shown.contains(&format!("/{in_use} blocks")), "{shown}");
    let out = tmp.path().join("restored.meta");
    sized_file(&out, 8 << 20);
    let shown = on_a_terminal(&["restore", "-i", s(&xml), "-o", s(&out)]).expect("script");
    let xml_bytes = std::fs::metadata(&xml).expect("stat").len();
    assert!(shown.contains("restoring metadata ["), "{shown}");
    assert!(xml_bytes < 1024, "an empty pool's XML is a few lines");
    assert!(shown.contains(&format!("/{xml_bytes}B")), "no bar of {xml_bytes} bytes: {shown}");
}
