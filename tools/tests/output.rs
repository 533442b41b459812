//! What the tools print where scripts look: thin_metadata_size's estimate as 1.x prints
//! it, the wording scripts grep for ("bad checksum in superblock", side by side with
//! 0.9.0), and silence on stderr when the reader of stdout has gone (`thin_dump | head`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::image::Image;
use common::*;
use thinly_engine::fsck::gen::GenConfig;

fn pool(dir: &Path) -> std::path::PathBuf {
    let (xml, meta) = (dir.join("gen.xml"), dir.join("gen.meta"));
    let (_, bytes) = write_generated_xml(&GenConfig::small(11), &xml);
    sized_file(&meta, bytes);
    ok(&thinly_run(&["restore", "-i", s(&xml), "-o", s(&meta)]), "thinly restore");
    meta
}

#[test]
fn thin_metadata_size_prints_1x_estimates_and_refuses_block_sizes_dm_thin_refuses() {
    // Expected lines from 1.x's formula (1 + ceil(blocks / 126) + max_thins metadata
    // blocks, at most 4 161 600) and its output (value, then the plural unit name).
    let cases: [(&[&str], &str); 8] = [
        (&["-b", "64k", "-s", "1t", "-m", "100"], "1066032 sectors\n"),
        (&["-b", "64k", "-s", "1t", "-m", "100", "-n"], "1066032\n"),
        (&["-b", "64k", "-s", "1t", "-m", "100", "-u", "m"], "520.52 mebibytes\n"),
        (&["-b", "64k", "-s", "1t", "-m", "100", "-u", "m", "-n=short"], "520.52m\n"),
        (&["-b", "64k", "-s", "1t", "-m", "100", "-u", "m", "-n=long"], "520.52mebibytes\n"),
        (&["--block-size=128", "--pool-size=10g", "--max-thins=1", "-u", "b"], "5337088 bytes\n"),
        (&["-b", "1g", "-s", "1t", "-m", "1", "-n"], "88\n"),
        (&["-b", "64k", "-s", "10000t", "-m", "1", "-u", "g"], "15.88 gibibytes\n"),
    ];
    for (args, want) in cases {
        let mut a = vec!["metadata-size"];
        a.extend_from_slice(args);
        let o = thinly_run(&a);
        ok(&o, &format!("{args:?}"));
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{args:?}");
    }
    // dm-thin takes multiples of 128 sectors from 128 to 2 097 152.
    for b in ["128", "256", "64k", "1m", "2097152"] {
        ok(&thinly_run(&["metadata-size", "-b", b, "-s", "1t", "-m", "1"]), b);
    }
    for b in ["0", "64", "129", "63k", "100k", "2097280", "2g"] {
        let o = thinly_run(&["metadata-size", "-b", b, "-s", "1t", "-m", "1"]);
        assert_eq!(o.status.code(), Some(64), "-b {b} accepted");
        assert!(o.stdout.is_empty(), "-b {b} printed an estimate");
    }
    if have_tools(&["thin_metadata_size"]) {
        // Where 0.9.0 agrees: these sizes are refused by both.
        for b in ["0", "63k"] {
            let real = run("thin_metadata_size", &["-b", b, "-s", "1t", "-m", "1"]);
            assert!(!real.status.success(), "0.9.0 -b {b}");
        }
    }
}

#[test]
fn a_bad_superblock_checksum_is_worded_as_the_real_tools_word_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path());
    let mut img = Image::load(&meta);
    img.flip(0, 100);
    img.save(&meta);
    let tools: [&[&str]; 5] = [
        &["check"],
        &["dump"],
        &["ls"],
        &["delta", "--snap1", "0", "--snap2", "1"],
        &["rmap", "--region", "0..10"],
    ];
    for args in tools {
        let mut a = args.to_vec();
        a.push(s(&meta));
        let o = thinly_run(&a);
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("bad checksum in superblock"), "{args:?}: {err}");
        if have_tools(&["thin_check"]) && matches!(args[0], "check" | "dump" | "ls") {
            let mut real = vec![format!("thin_{}", args[0])];
            real.push(s(&meta).to_string());
            let r = run(&real[0], &[real[1].as_str()]);
            let text = String::from_utf8_lossy(&r.stderr).into_owned()
                + &String::from_utf8_lossy(&r.stdout);
            assert!(text.contains("bad checksum in superblock"), "0.9.0 {args:?}: {text}");
        }
    }
}

/// Runs thinly with its stdout a pipe whose reading end is already closed.
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(thinly())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_pipe_leaves_stderr_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = pool(dir.path());
    let m = s(&meta);
    let cases: [&[&str]; 10] = [
        &["dump", m],
        &["dump", "--repair", m],
        &["dump", "-f", "human_readable", m],
        &["ls", m],
        &["delta", "--snap1", "0", "--snap2", "1", m],
        &["rmap", "--region", "0..100", m],
        &["metadata-size", "-b", "64k", "-s", "1t", "-m", "1"],
        &["thin_dump", "-V"],
        &["check", "--help"],
        &["check", m],
    ];
    for args in cases {
        let o = with_closed_stdout(args);
        assert!(o.status.code().is_some(), "{args:?} died of a signal");
        let err = String::from_utf8_lossy(&o.stderr);
        // thin_check's progress lines belong on stderr (0.9.0 prints them); nothing else.
        let rest: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("examining ") && *l != "checking space map counts")
            .collect();
        assert!(rest.is_empty(), "{args:?} wrote to stderr: {err}");
    }
}
