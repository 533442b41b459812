//! Peak memory of restore and repair on 2 M mappings, against the real thin_restore and
//! thin_repair on the same input (`/usr/bin/time -v`'s maximum resident set size): within
//! twice theirs, as both stream. Figures are printed (`-- --nocapture`).

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::*;

/// Four devices of 500 000 mappings each, in runs of 1 to 8 blocks with gaps, as XML.
fn write_two_million_mappings(xml: &Path) {
    let (nr_devices, per_device) = (4u64, 500_000u64);
    let mut out = format!(
        "<superblock uuid=\"\" time=\"1\" transaction=\"1\" flags=\"0\" version=\"2\" \
         data_block_size=\"128\" nr_data_blocks=\"{}\">\n",
        nr_devices * per_device * 2
    );
    let (mut data, mut x) = (0u64, 12345u64);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for dev in 0..nr_devices {
        let _ = writeln!(
            out,
            "  <device dev_id=\"{dev}\" mapped_blocks=\"{per_device}\" transaction=\"0\" \
             creation_time=\"0\" snap_time=\"0\">"
        );
        let (mut virt, mut n) = (0u64, 0u64);
        while n < per_device {
            let len = (1 + next() % 8).min(per_device - n);
            virt += next() % 4;
            let _ = writeln!(
                out,
                "    <range_mapping origin_begin=\"{virt}\" data_begin=\"{data}\" \
                 length=\"{len}\" time=\"0\"/>"
            );
            virt += len;
            data += len + next() % 3;
            n += len;
        }
        out.push_str("  </device>\n");
    }
    out.push_str("</superblock>\n");
    std::fs::write(xml, out).expect("write XML");
}

/// Runs `prog args` under `/usr/bin/time -v`; returns the peak RSS in KiB.
fn peak_rss_kib(prog: &str, args: &[&str]) -> u64 {
    let mut argv = vec!["-v", prog];
    argv.extend_from_slice(args);
    let o = run("/usr/bin/time", &argv);
    ok(&o, &format!("{prog} {args:?}"));
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.trim().parse().ok())
        .expect("time -v prints the maximum resident set size")
}

#[test]
fn restore_and_repair_of_two_million_mappings_use_at_most_twice_the_real_tools_memory() {
    if !have_tools(&["thin_restore", "thin_repair", "thin_dump"]) {
        return;
    }
    if !Path::new("/usr/bin/time").exists() && !missing("/usr/bin/time (package time)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| dir.path().join(n);
    write_two_million_mappings(&d("big.xml"));
    for m in ["real.meta", "ours.meta", "real-repair.meta", "ours-repair.meta"] {
        sized_file(&d(m), 256 << 20);
    }
    let me = s(&thinly()).to_string();
    let real_restore =
        peak_rss_kib("thin_restore", &["-i", s(&d("big.xml")), "-o", s(&d("real.meta"))]);
    let ours_restore =
        peak_rss_kib(&me, &["restore", "-i", s(&d("big.xml")), "-o", s(&d("ours.meta"))]);
    let real_repair =
        peak_rss_kib("thin_repair", &["-i", s(&d("real.meta")), "-o", s(&d("real-repair.meta"))]);
    let ours_repair = peak_rss_kib(
        &me,
        &["repair", "-q", "-i", s(&d("real.meta")), "-o", s(&d("ours-repair.meta"))],
    );
    eprintln!("peak RSS KiB: restore {ours_restore} (real {real_restore}), repair {ours_repair} (real {real_repair})");
    let dump = |m: &str| run("thin_dump", &[s(&d(m))]).stdout;
    assert!(dump("ours.meta") == dump("real.meta"), "restore wrote other metadata");
    assert!(dump("ours-repair.meta") == dump("real.meta"), "repair lost something");
    assert!(ours_restore <= 2 * real_restore, "restore: {ours_restore} KiB vs {real_restore}");
    assert!(ours_repair <= 2 * real_repair, "repair: {ours_repair} KiB vs {real_repair}");
}
