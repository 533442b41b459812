//! thinly writes a pool; the guest kernel activates it (with the tables `thinly
//! kernel-script` prints), reads every block of every volume, writes more (new blocks and
//! copy-on-write breaks) and tears down; thinly reopens the pool, thin_check is clean, and
//! thinly reads the kernel's writes exactly. One guest boot.

use thinly_lab::kernel::harness;

use harness::{Guest, Work};
use std::collections::BTreeMap;
use std::path::Path;
use thinly_engine::io::IoMode;
use thinly_engine::kernel::activate::{Activation, ActivationOptions, DATA_FILE, METADATA_FILE};
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};
use thinly_lab::kernel::observe::{block_sum, dump_layout, reader_view_from_dump, DumpSlot, Sum};
use thinly_lab::kernel::opscript::Pattern;

const BS: u64 = 64 << 10;
const MIB: u64 = 1 << 20;

fn seed(word: &str, offset: u64, len: u64) -> Vec<u8> {
    Pattern::Seed(word.into()).bytes(offset, len)
}

/// Builds the pool: volumes, patterns, snapshots of snapshots, discards, a delete, a
/// read-only snapshot. Returns every volume's bytes as thinly reads them.
fn build_pool(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let opts = PoolOptions {
        data_size_bytes: 1024 * BS,
        metadata_size_bytes: Some(8 * MIB),
        settings: PoolSettings { data_block_size_bytes: BS, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir, &opts).expect("creating the pool");
    let base = pool.create_volume("base", 8 * MIB).unwrap();
    base.write(0, &seed("base", 0, 3 * MIB), false).unwrap();
    base.write(5 * MIB + 1024, &seed("base-tail", 5 * MIB + 1024, 200 * 1024), false).unwrap();
    let snap1 = pool.snapshot("base", "snap1", false).unwrap();
    snap1.write(BS + 512, &seed("snap1", BS + 512, 4096), false).unwrap(); // partial CoW
    snap1.write(4 * BS, &[0x5a; BS as usize], false).unwrap(); // whole-block CoW
    base.write(2 * BS, &seed("base-after", 2 * BS, 8192), false).unwrap(); // origin CoW
    let snap2 = pool.snapshot("snap1", "snap2", false).unwrap(); // snapshot of a snapshot
    snap2.write(7 * MIB, &seed("snap2", 7 * MIB, MIB), false).unwrap();
    snap2.discard(10 * BS, 6 * BS, false).unwrap(); // shared blocks, dropped from snap2 only
    let other = pool.create_volume("other", 4 * MIB).unwrap();
    other.write(0, &seed("other", 0, 4 * MIB), false).unwrap();
    other.discard(MIB + 100, 2 * MIB, false).unwrap(); // partial ends stay
    let doomed = pool.create_volume("doomed", 2 * MIB).unwrap();
    doomed.write(0, &[0xdd; 2 * MIB as usize], false).unwrap();
    pool.delete_volume("doomed").unwrap();
    pool.snapshot("snap2", "frozen", true).unwrap();
    let mut out = BTreeMap::new();
    for (name, v) in pool.list() {
        let mut buf = vec![0u8; v.size_bytes as usize];
        pool.volume(&name).unwrap().read(0, &mut buf).unwrap();
        out.insert(name, buf);
    }
    pool.close().unwrap();
    out
}

fn sums(bytes: &[u8]) -> Vec<Sum> {
    bytes.chunks(BS as usize).map(block_sum).collect()
}

/// The kernel's writes: (volume, offset, length, seed word).
const KERNEL_WRITES: &[(&str, u64, u64, &str)] = &[
    ("other", 3 * MIB + 4096, 4096, "k-new-partial"), // unmapped block: provisioning
    ("other", 2 * MIB, BS, "k-new-whole"),            // discarded block: provisioning
    ("snap2", BS + 1024, 2048, "k-cow-partial"),      // shared with snap1 and frozen
    ("base", 0, BS, "k-cow-whole"),                   // shared with snap1/snap2/frozen
    ("base", 2 * BS + 512, 512, "k-in-place"),        // base's own block since its CoW
    ("snap1", 6 * MIB, 3 * BS, "k-unmapped-run"),
];

fn dump_cmds(act: &Activation, slots: &[DumpSlot], base: u64) -> String {
    let mut s = String::new();
    for (t, sl) in act.thins.iter().zip(slots) {
        s.push_str(&format!(
            "check \"read every block of {}\" dd if=/dev/mapper/{} of=$SCRATCH bs=65536 seek={} count={} conv=notrunc\n",
            t.volume,
            t.name,
            (base + sl.offset_bytes) / BS,
            sl.len_bytes / BS
        ));
    }
    s
}

#[test]
fn the_kernel_reads_and_writes_a_pool_thinly_made() {
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("kernel-thinly-pool");
    let dir = work.sub("pool");
    let before = build_pool(&dir);
    let act = Activation::from_pool_dir(
        &dir,
        &ActivationOptions { pool_name: Some("tpool".into()), thin_prefix: String::new() },
    )
    .unwrap();
    assert_eq!(act.thins.len(), 5, "{act:?}");
    let share = work.sub("share");
    std::fs::write(share.join("activate.sh"), act.guest_script(METADATA_FILE, DATA_FILE)).unwrap();
    let sizes: Vec<(u64, u64)> = act.thins.iter().map(|t| (t.dev_id, t.sectors * 512)).collect();
    let slots = dump_layout(&sizes);
    let total = slots.last().map_or(0, |s| s.offset_bytes + s.len_bytes);
    let scratch = work.path("dump");
    harness::sparse_file(&scratch, 2 * total);

    // The expected bytes after the kernel's writes, and the guest's commands for them.
    let mut after = before.clone();
    let mut script = String::from(
        ". /host/activate.sh\nSCRATCH=$(disk_by_serial dump)\ncheck \"the pool activates\" pool_activate\n\
         log \"pool status: $(dmsetup status $POOL_NAME)\"\n",
    );
    script.push_str(&dump_cmds(&act, &slots, 0));
    for (i, &(vol, off, len, word)) in KERNEL_WRITES.iter().enumerate() {
        let bytes = seed(word, off, len);
        after.get_mut(vol).unwrap()[off as usize..(off + len) as usize].copy_from_slice(&bytes);
        std::fs::write(share.join(format!("w{i}.bin")), &bytes).unwrap();
        let name = &act.thins.iter().find(|t| t.volume == vol).unwrap().name;
        script.push_str(&format!(
            "check \"kernel write {word} to {vol}\" dd if=/host/w{i}.bin of=/dev/mapper/{name} bs=512 seek={} count={} oflag=direct conv=notrunc\n",
            off / 512,
            len / 512
        ));
    }
    script.push_str("check \"a read-only volume refuses writes\" sh -c '! dd if=/dev/zero of=/dev/mapper/frozen bs=512 count=1 oflag=direct'\n");
    script.push_str("echo 3 > /proc/sys/vm/drop_caches\n");
    script.push_str(&dump_cmds(&act, &slots, total));
    script.push_str(
        "log \"pool status: $(dmsetup status $POOL_NAME)\"\ncheck \"teardown\" pool_deactivate\n\
         check \"thin_check in the guest\" thin_check $META\nfinish\n",
    );
    let run = Guest::new()
        .disk(&dir.join(METADATA_FILE))
        .disk(&dir.join(DATA_FILE))
        .disk(&scratch)
        .run(&share, "thinly-pool.sh", &script);
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    run.expect_ok("the kernel on thinly's pool");

    // 1. The kernel read every block with the bytes thinly wrote.
    let names: Vec<&str> = act.thins.iter().map(|t| t.volume.as_str()).collect();
    let first = reader_view_from_dump(&scratch, &slots, BS).unwrap();
    for (t, name) in act.thins.iter().zip(&names) {
        let want = sums(&before[*name]);
        let got = &first[&t.dev_id];
        let bad: Vec<usize> = (0..want.len()).filter(|&i| want[i] != got[i]).collect();
        assert!(bad.is_empty(), "the kernel read {name} differently from thinly at blocks {bad:?}");
    }
    // 2. The metadata the kernel left checks clean (the real tool and the engine).
    let meta = dir.join(METADATA_FILE);
    if let Some((clean, out)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check after the kernel's writes:\n{out}");
    }
    assert!(harness::engine_check(&meta).is_empty(), "{:?}", harness::engine_check(&meta));
    // 3. thinly reopens the pool and reads the kernel's writes exactly; so did the kernel.
    let second: Vec<DumpSlot> = slots
        .iter()
        .map(|s| DumpSlot { offset_bytes: s.offset_bytes + total, ..s.clone() })
        .collect();
    let kernel_after = reader_view_from_dump(&scratch, &second, BS).unwrap();
    let pool = Pool::open(&dir, IoMode::Auto).expect("thinly reopens the pool");
    let vols: Vec<String> = pool.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(vols.len(), names.len(), "the same volumes: {vols:?}");
    for (t, name) in act.thins.iter().zip(&names) {
        let mut buf = vec![0u8; after[*name].len()];
        pool.volume(name).unwrap().read(0, &mut buf).unwrap();
        let (want, got) = (sums(&after[*name]), sums(&buf));
        let bad: Vec<usize> = (0..want.len()).filter(|&i| want[i] != got[i]).collect();
        assert!(
            bad.is_empty(),
            "thinly reads {name} wrong after the kernel's writes at blocks {bad:?}"
        );
        assert_eq!(
            kernel_after[&t.dev_id], want,
            "the kernel's own reads of {name} after its writes"
        );
    }
    let st = pool.status();
    println!("thinly after the kernel: {st}");
    pool.close().unwrap();
}

/// `thinly kernel-script` (no lab needed): the tables name the pool's block size, size,
/// low water mark and features, and every volume with its device id and size.
#[test]
fn kernel_script_prints_the_tables_of_a_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mypool");
    let opts = PoolOptions {
        data_size_bytes: 256 * 128 * 1024,
        metadata_size_bytes: Some(4 * MIB),
        settings: PoolSettings {
            data_block_size_bytes: 128 << 10,
            low_water_mark_blocks: 7,
            zeroing: false,
            out_of_space: thinly_engine::pool::OutOfSpacePolicy::Error,
            ..PoolSettings::default()
        },
        ..PoolOptions::default()
    };
    let pool = Pool::create(&dir, &opts).unwrap();
    pool.create_volume("v", 3 * MIB).unwrap();
    pool.snapshot("v", "s", true).unwrap();
    pool.close().unwrap();
    drop(pool);
    let act = Activation::from_pool_dir(&dir, &ActivationOptions::default()).unwrap();
    let text = act.host_script(Path::new("/p/metadata"), Path::new("/p/data"));
    assert!(
        text.contains(
            "dmsetup create mypool --table \"0 65536 thin-pool $META $DATA 256 7 2 skip_block_zeroing error_if_no_space\""
        ),
        "{text}"
    );
    assert!(
        text.contains("dmsetup create v --table \"0 6144 thin /dev/mapper/mypool 1\""),
        "{text}"
    );
    assert!(
        text.contains("dmsetup create --readonly s --table \"0 6144 thin /dev/mapper/mypool 2\""),
        "{text}"
    );
    assert!(text.contains("losetup --find --show /p/metadata"), "{text}");
    if let Some(bin) = harness::thinly_bin() {
        let out = harness::thinly(&bin, &["kernel-script", dir.to_str().unwrap()]);
        assert!(
            out.contains("thin-pool $META $DATA 256 7 2 skip_block_zeroing error_if_no_space"),
            "{out}"
        );
        let g = harness::thinly(
            &bin,
            &["kernel-script", "--guest", "--name", "tp", dir.to_str().unwrap()],
        );
        assert!(g.contains("pool_activate()") && g.contains("disk_by_serial metadata"), "{g}");
    }
}
