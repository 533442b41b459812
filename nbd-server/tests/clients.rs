//! Real NBD clients (libnbd's nbdinfo/nbdcopy, qemu-io, qemu-img, fio) against an
//! in-process server with `MemExport`s. A missing tool skips loudly, or fails under CI.
//! Assertions are on exit codes, parsed output and the export's contents.

mod common;

use common::*;
use thinly_nbd::Export;

#[test]
fn nbdinfo_reports_size_flags_and_both_meta_contexts() {
    let Some(nbdinfo) = tool("nbdinfo") else {
        return;
    };
    let srv = TestServer::start("nbdinfo");
    let out = run_ok(&nbdinfo, &["--json", &srv.uri("mem")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("nbdinfo --json output");
    let e = &v["exports"][0];
    assert_eq!(v["structured"], true);
    assert_eq!(e["export-name"], "mem");
    assert_eq!(e["export-size"], MEM_SIZE);
    for flag in [
        "can_multi_conn",
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_df",
    ] {
        assert_eq!(e[flag], true, "{flag}");
    }
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    let contexts: Vec<&str> =
        e["contexts"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
    assert!(contexts.contains(&"base:allocation") && contexts.contains(&"qemu:allocation-depth"));
}

#[test]
fn nbdinfo_list_over_tcp_shows_every_export() {
    let Some(nbdinfo) = tool("nbdinfo") else {
        return;
    };
    let srv = TestServer::start("nbdinfo-list");
    let out = run_ok(&nbdinfo, &["--list", "--json", &srv.tcp_uri("")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("nbdinfo --list --json output");
    let mut names: Vec<&str> =
        v["exports"].as_array().unwrap().iter().filter_map(|e| e["export-name"].as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["mem", "ro", "tiny"]);
}

#[test]
fn nbdinfo_is_read_only_is_true_only_for_the_read_only_export() {
    let Some(nbdinfo) = tool("nbdinfo") else {
        return;
    };
    let srv = TestServer::start("nbdinfo-ro");
    assert_eq!(run(&nbdinfo, &["--is", "read-only", &srv.uri("ro")]).status.code(), Some(0));
    assert_eq!(run(&nbdinfo, &["--is", "read-only", &srv.uri("mem")]).status.code(), Some(2));
}

/// `nbdinfo --map` lines: (offset, length, type).
fn parse_map(out: &str) -> Vec<(u64, u64, u32)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn nbdinfo_map_shows_written_data_and_holes_and_allocation_depth() {
    let Some(nbdinfo) = tool("nbdinfo") else {
        return;
    };
    let srv = TestServer::start("nbdinfo-map");
    srv.mem.write(1 << 20, &pattern(1 << 20, 1), false).unwrap();
    srv.mem.mark_shared();
    srv.mem.write(3 << 20, &pattern(1 << 20, 2), false).unwrap();
    let map = parse_map(&run_ok(&nbdinfo, &["--map", &srv.uri("mem")]));
    let expected = vec![
        (0, 1 << 20, 3),
        (1 << 20, 1 << 20, 0),
        (2 << 20, 1 << 20, 3),
        (3 << 20, 1 << 20, 0),
        (4 << 20, MEM_SIZE - (4 << 20), 3),
    ];
    assert_eq!(map, expected);
    let depth = parse_map(&run_ok(&nbdinfo, &["--map=qemu:allocation-depth", &srv.uri("mem")]));
    let expected = vec![
        (0, 1 << 20, 0),
        (1 << 20, 1 << 20, 2),
        (2 << 20, 1 << 20, 0),
        (3 << 20, 1 << 20, 1),
        (4 << 20, MEM_SIZE - (4 << 20), 0),
    ];
    assert_eq!(depth, expected);
}

#[test]
fn qemu_io_write_read_discard_and_write_zeroes_patterns_verify() {
    let Some(qemu_io) = tool("qemu-io") else {
        return;
    };
    let srv = TestServer::start("qemu-io");
    let uri = srv.uri("mem");
    let cmds = [
        "write -P 0xab 0 1M",
        "read -P 0xab 0 1M",
        "aio_write -P 0x11 4M 256k",
        "aio_write -P 0x22 5M 256k",
        "aio_flush",
        "read -P 0x11 4M 256k",
        "read -P 0x22 5M 256k",
        "write -P 0xcd 1M 1M",
        "write -z 1M 512k",
        "read -P 0 1M 512k",
        "read -P 0xcd 1536k 512k",
        "write -z -u 1536k 512k",
        "read -P 0 1M 1M",
        "write -P 0xee 8M 1M",
        "discard 8M 1M",
        "write -P 0x5a 20983065 1000",
        "read -P 0x5a 20983065 1000",
        "flush",
    ];
    let mut args = vec!["-f", "raw", &uri];
    for c in &cmds {
        args.extend(["-c", c]);
    }
    run_ok(&qemu_io, &args);
    let mut buf = vec![0u8; 1 << 20];
    srv.mem.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    // write -z -u on whole pages unmaps them; discard unmaps 8M..9M.
    let bs = srv.mem.block_status(1536 << 10, 512 << 10).unwrap();
    assert!(bs.iter().all(|e| e.flags == 3), "{bs:?}");
    let bs = srv.mem.block_status(8 << 20, 1 << 20).unwrap();
    assert!(bs.iter().all(|e| e.flags == 3), "{bs:?}");
    assert!(srv.mem.nr_flushes() > 0);
}

#[test]
fn qemu_io_verification_failure_is_detected() {
    // Guards the test above: a wrong pattern must make qemu-io exit non-zero.
    let Some(qemu_io) = tool("qemu-io") else {
        return;
    };
    let srv = TestServer::start("qemu-io-neg");
    let out = run(&qemu_io, &["-f", "raw", &srv.uri("mem"), "-c", "read -P 0x77 0 4k"]);
    assert!(!out.status.success());
}

#[test]
fn qemu_io_write_to_read_only_or_full_exports_fails_cleanly() {
    let Some(qemu_io) = tool("qemu-io") else {
        return;
    };
    let srv = TestServer::start("qemu-io-err");
    let out = run(&qemu_io, &["-f", "raw", &srv.uri("ro"), "-c", "write -P 1 0 4k"]);
    assert!(!out.status.success());
    // `tiny` has 1 MiB of capacity: the first MiB fits, the next write is ENOSPC.
    run_ok(&qemu_io, &["-f", "raw", &srv.uri("tiny"), "-c", "write -P 1 0 1M"]);
    let out = run(&qemu_io, &["-f", "raw", &srv.uri("tiny"), "-c", "write -P 1 2M 64k"]);
    assert!(!out.status.success());
    // The connection-level state is fine afterwards: data written before reads back.
    run_ok(&qemu_io, &["-f", "raw", &srv.uri("tiny"), "-c", "read -P 1 0 1M"]);
}

#[test]
fn qemu_img_info_map_convert_and_compare_round_trip() {
    let Some(qemu_img) = tool("qemu-img") else {
        return;
    };
    let srv = TestServer::start("qemu-img");
    let uri = srv.uri("mem");
    let info = run_ok(&qemu_img, &["info", "--output=json", "-f", "raw", &uri]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("qemu-img info json");
    assert_eq!(v["virtual-size"], MEM_SIZE);

    // A sparse source file: data at 0..2M and 10M..11M, holes elsewhere.
    let src = srv.dir.path("src.raw");
    let mut img = vec![0u8; MEM_SIZE as usize];
    img[..2 << 20].copy_from_slice(&pattern(2 << 20, 7));
    img[10 << 20..11 << 20].copy_from_slice(&pattern(1 << 20, 9));
    std::fs::write(&src, &img).unwrap();
    let src_s = src.to_str().unwrap();
    run_ok(&qemu_img, &["convert", "-n", "-f", "raw", "-O", "raw", src_s, &uri]);
    run_ok(&qemu_img, &["compare", "-f", "raw", "-F", "raw", src_s, &uri]);

    let map = run_ok(&qemu_img, &["map", "--output=json", "-f", "raw", &uri]);
    let v: serde_json::Value = serde_json::from_str(&map).expect("qemu-img map json");
    let data_bytes: u64 = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    // Zero pages in the source may be skipped, so data is at most what we wrote.
    assert!(data_bytes > 0 && data_bytes <= 3 << 20, "data bytes {data_bytes}");

    let dst = srv.dir.path("dst.raw");
    let dst_s = dst.to_str().unwrap();
    run_ok(&qemu_img, &["convert", "-f", "raw", "-O", "raw", &uri, dst_s]);
    assert!(std::fs::read(&dst).unwrap() == img, "nbd → file copy differs");
    img[5] ^= 1;
    std::fs::write(&src, &img).unwrap();
    let out = run(&qemu_img, &["compare", "-f", "raw", "-F", "raw", src_s, &uri]);
    assert_eq!(out.status.code(), Some(1), "compare must see the difference");
}

#[test]
fn nbdcopy_round_trip_preserves_data_and_sparseness() {
    let Some(nbdcopy) = tool("nbdcopy") else {
        return;
    };
    let srv = TestServer::start("nbdcopy");
    let uri = srv.uri("mem");
    let src = srv.dir.path("src.raw");
    let mut img = vec![0u8; MEM_SIZE as usize];
    img[3 << 20..5 << 20].copy_from_slice(&pattern(2 << 20, 3));
    img[60 << 20..(60 << 20) + 4096].copy_from_slice(&pattern(4096, 4));
    std::fs::write(&src, &img).unwrap();
    run_ok(&nbdcopy, &[src.to_str().unwrap(), &uri, "--flush"]);
    let mut back = vec![0u8; MEM_SIZE as usize];
    srv.mem.read(0, &mut back).unwrap();
    assert!(back == img, "file → nbd copy differs");
    assert!(srv.mem.allocated_bytes() < 8 << 20, "holes stayed holes");
    let dst = srv.dir.path("dst.raw");
    run_ok(&nbdcopy, &[&uri, dst.to_str().unwrap()]);
    assert!(std::fs::read(&dst).unwrap() == img, "nbd → file copy differs");
}

#[test]
fn fio_random_writes_on_two_connections_verify_with_crc32c() {
    let Some(fio) = tool("fio") else { return };
    let srv = TestServer::start("fio");
    let uri = format!("--uri={}", srv.uri("mem"));
    let out = run(
        &fio,
        &[
            "--name=verify",
            "--ioengine=nbd",
            &uri,
            "--rw=randwrite",
            "--bs=4k",
            "--size=16M",
            "--numjobs=2",
            "--offset_increment=16M",
            "--iodepth=16",
            "--verify=crc32c",
            "--verify_state_save=0",
            "--do_verify=1",
            "--group_reporting",
            "--output-format=json",
        ],
    );
    assert!(out.status.success(), "fio failed");
    // fio may print notes before the JSON document.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = &stdout[stdout.find('{').expect("fio json output")..];
    let v: serde_json::Value = serde_json::from_str(json).expect("fio json output");
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0);
    assert_eq!(job["write"]["io_bytes"], 32u64 << 20);
    assert_eq!(job["read"]["io_bytes"], 32u64 << 20, "verify pass read everything back");
    assert_eq!(srv.mem.allocated_bytes(), 32 << 20);
}
