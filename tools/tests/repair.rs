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

/// Writes `n` blocks of a pattern seeded by `seed` from block `first` of `vol`.
fn fill(vol: &thinly_engine::pool::Volume, first: u64, n: u64, seed: u8, bs: u64) {
    for b in first..first + n {
        let data: Vec<u8> =
            (0..bs).map(|i| seed.wrapping_add(b as u8).wrapping_mul(7) ^ i as u8).collect();
        vol.write(b * bs, &data, false).expect("write");
    }
}

fn read_all(vol: &thinly_engine::pool::Volume, bytes: u64) -> Vec<u8> {
    let mut out = vec![0u8; bytes as usize];
    vol.read(0, &mut out).expect("read");
    out
}

/// Every `<device>`'s snap_time, and the highest time of the mappings under it.
fn snap_and_mapping_times(xml: &str) -> Vec<(u32, u32)> {
    let attr = |l: &str, a: &str| -> Option<u32> {
        l.split(&format!(" {a}=\"")).nth(1)?.split('"').next()?.parse().ok()
    };
    let mut out: Vec<(u32, u32)> = Vec::new();
    for l in xml.lines() {
        if l.contains("<device ") {
            out.push((attr(l, "snap_time").expect("snap_time"), 0));
        } else if l.contains("mapping ") {
            let t = attr(l, "time").expect("time");
            let last = out.last_mut().expect("a mapping inside a device");
            last.1 = last.1.max(t);
        }
    }
    out
}

#[test]
fn after_repairing_a_lost_details_tree_writes_to_the_origin_leave_the_snapshot_unchanged() {
    use thinly_engine::io::IoMode;
    use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};
    let dir = tempfile::tempdir().expect("tempdir");
    let pool_dir = dir.path().join("pool");
    let opts = PoolOptions {
        data_size_bytes: 64 << 20,
        settings: PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let (vol_bytes, bs) = (4u64 << 20, 64u64 << 10);
    let pool = Pool::create(&pool_dir, &opts).expect("create pool");
    let origin = pool.create_volume("origin", vol_bytes).expect("create origin");
    fill(&origin, 0, 40, 1, bs);
    let snap1 = pool.snapshot("origin", "snap1", false).expect("snapshot");
    fill(&origin, 10, 20, 2, bs); // copies-on-write: the origin now has two mapping times
    let snap2 = pool.snapshot("origin", "snap2", false).expect("snapshot");
    let (before1, before2) = (read_all(&snap1, vol_bytes), read_all(&snap2, vol_bytes));
    drop((origin, snap1, snap2));
    pool.close().expect("close");
    drop(pool);

    // The details tree is lost; repair, and put the result in the pool's place.
    let meta = pool_dir.join("metadata");
    let mut img = Image::load(&meta);
    let droot = img.sb().device_details_root.0;
    img.zero(droot);
    let bad = dir.path().join("bad.meta");
    img.save(&bad);
    let repaired = dir.path().join("repaired.meta");
    sized_file(&repaired, img.bytes.len() as u64);
    ok(&thinly_run(&["repair", "-i", s(&bad), "-o", s(&repaired)]), "thinly repair");
    if have_tools(&["thin_check"]) {
        ok(&run("thin_check", &[s(&repaired)]), "thin_check of the repair");
    }
    // The kernel's sharing test (snap_time later than the mapping's time) holds for
    // every mapping of every device, so the kernel too copies before writing.
    let dumped = thinly_run(&["dump", s(&repaired)]);
    ok(&dumped, "thinly dump");
    let times = snap_and_mapping_times(&String::from_utf8_lossy(&dumped.stdout));
    assert_eq!(times.len(), 3, "three devices come back");
    for (snap_time, mapping_time) in times {
        assert!(snap_time > mapping_time, "snap_time {snap_time} <= mapping time {mapping_time}");
    }
    std::fs::copy(&repaired, &meta).expect("replace the metadata");

    let pool = Pool::open(&pool_dir, IoMode::Posix).expect("open the repaired pool");
    let origin = pool.volume("origin").expect("origin");
    fill(&origin, 0, vol_bytes / bs, 3, bs);
    pool.commit().expect("commit");
    let (snap1, snap2) = (pool.volume("snap1").expect("snap1"), pool.volume("snap2").expect("2"));
    assert!(read_all(&snap1, vol_bytes) == before1, "writing the origin changed snap1");
    assert!(read_all(&snap2, vol_bytes) == before2, "writing the origin changed snap2");
    drop((origin, snap1, snap2));
    pool.close().expect("close");
    drop(pool);
    if have_tools(&["thin_check"]) {
        ok(&run("thin_check", &[s(&meta)]), "thin_check after the writes");
    }
}

/// Two devices (transactions 3 and 6), data block size 1024, highest data block 300,
/// mapping times up to 4: the figures a rebuilt superblock must find again.
const KNOWN_POOL: &str = r#"<superblock uuid="" time="5" transaction="7" flags="0" version="2" data_block_size="1024" nr_data_blocks="1000">
  <device dev_id="1" mapped_blocks="3" transaction="3" creation_time="0" snap_time="4">
    <range_mapping origin_begin="0" data_begin="0" length="2" time="0"/>
    <single_mapping origin_block="5" data_block="300" time="4"/>
  </device>
  <device dev_id="2" mapped_blocks="2" transaction="6" creation_time="4" snap_time="4">
    <range_mapping origin_begin="0" data_begin="0" length="2" time="0"/>
  </device>
</superblock>
"#;

/// The known pool restored into `dir/known.meta`.
fn known_pool(dir: &Path) -> std::path::PathBuf {
    let (xml, meta) = (dir.join("known.xml"), dir.join("known.meta"));
    std::fs::write(&xml, KNOWN_POOL).expect("write XML");
    sized_file(&meta, 4 << 20);
    ok(&thinly_run(&["restore", "-i", s(&xml), "-o", s(&meta)]), "thinly restore");
    meta
}

/// The first line of a dump (the `<superblock>` element).
fn header(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string()
}

#[test]
fn a_lost_superblock_without_a_data_block_size_is_refused_by_repair_and_dump_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = known_pool(dir.path());
    let mut img = Image::load(&meta);
    img.zero(0);
    let bad = dir.path().join("bad.meta");
    img.save(&bad);
    let out = dir.path().join("out.meta");
    sized_file(&out, 4 << 20);
    let before = std::fs::read(&out).expect("read output");
    // 1.x: "data block size needs to be provided due to corruption in the superblock".
    for args in [vec!["repair", "-i", s(&bad), "-o", s(&out)], vec!["dump", "--repair", s(&bad)]] {
        let o = thinly_run(&args);
        assert!(!o.status.success(), "{args:?} succeeded without a data block size");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("data block size needs to be provided"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?} printed a dump");
    }
    assert!(std::fs::read(&out).expect("read output") == before, "a refused repair wrote");
    // Sizes dm-thin would not accept are refused too (1.x: "invalid data block size").
    for bs in ["100", "64", "4194304"] {
        let o = thinly_run(&["repair", "-i", s(&bad), "-o", s(&out), "--data-block-size", bs]);
        assert!(!o.status.success(), "--data-block-size {bs} accepted");
    }
}

#[test]
fn a_rebuilt_superblock_takes_the_transaction_and_data_block_count_as_1x_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = known_pool(dir.path());
    let mut img = Image::load(&meta);
    img.zero(0);
    let bad = dir.path().join("bad.meta");
    img.save(&bad);
    let out = dir.path().join("out.meta");
    sized_file(&out, 4 << 20);
    // (extra arguments, transaction, nr_data_blocks): the highest device transaction + 1,
    // the highest mapped data block + 1; an override wins only when it is larger.
    let cases: [(&[&str], u64, u64); 3] = [
        (&[], 7, 301),
        (&["--transaction-id", "2", "--nr-data-blocks", "10"], 7, 301),
        (&["--transaction-id", "20", "--nr-data-blocks", "5000"], 20, 5000),
    ];
    for (extra, tid, nr) in cases {
        let mut args = vec!["repair", "-i", s(&bad), "-o", s(&out), "--data-block-size", "1024"];
        args.extend_from_slice(extra);
        ok(&thinly_run(&args), "thinly repair");
        if have_tools(&["thin_check"]) {
            ok(&run("thin_check", &[s(&out)]), "thin_check of the rebuilt metadata");
        }
        let want = format!(
            "<superblock uuid=\"\" time=\"4\" transaction=\"{tid}\" flags=\"0\" version=\"2\" \
             data_block_size=\"1024\" nr_data_blocks=\"{nr}\">"
        );
        assert_eq!(header(&thinly_run(&["dump", s(&out)])), want, "repair {extra:?}");
        let mut dump_args = vec!["dump", "--repair", "--data-block-size", "1024", s(&bad)];
        dump_args.extend_from_slice(extra);
        assert_eq!(header(&thinly_run(&dump_args)), want, "dump --repair {extra:?}");
    }
}

#[test]
fn dump_overrides_apply_to_an_intact_superblock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = known_pool(dir.path());
    let larger = ["--transaction-id", "9", "--data-block-size", "256", "--nr-data-blocks", "5000"];
    let want = "<superblock uuid=\"\" time=\"5\" transaction=\"9\" flags=\"0\" version=\"2\" \
                data_block_size=\"256\" nr_data_blocks=\"5000\">";
    let mut args = vec!["dump"];
    args.extend_from_slice(&larger);
    args.push(s(&meta));
    let ours = thinly_run(&args);
    assert_eq!(header(&ours), want);
    // Where 0.9.0 and 1.x agree (values above the metadata's), side by side.
    if have_tools(&["thin_dump"]) {
        assert_eq!(header(&run("thin_dump", &args[1..])), want);
    }
    // 1.x never lowers the transaction id or the data block count (0.9.0 would print
    // nr_data_blocks="10" below a mapped block 300).
    let smaller =
        thinly_run(&["dump", "--transaction-id", "2", "--nr-data-blocks", "10", s(&meta)]);
    assert_eq!(
        header(&smaller),
        "<superblock uuid=\"\" time=\"5\" transaction=\"7\" flags=\"0\" version=\"2\" \
         data_block_size=\"1024\" nr_data_blocks=\"1000\">"
    );
}
