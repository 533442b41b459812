//! The kernel half of the lost-details-tree proof (tools/tests/repair.rs holds thinly's):
//! a thinly pool with two snapshots loses its device-details tree; repair rebuilds the
//! details; the guest kernel activates the repaired pool and overwrites the whole origin;
//! the snapshots must still read what they held before. With the details rebuilt at
//! snap_time 0 the kernel would write in place over the shared blocks. One guest boot.

use thinly_lab::kernel::harness;

use harness::{Guest, Work};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use thinly_engine::format::superblock::Superblock;
use thinly_engine::fsck::repair::repair;
use thinly_engine::fsck::restore::Overrides;
use thinly_engine::io::{BlockDevice, FileDevice, IoMode};
use thinly_engine::kernel::activate::{Activation, ActivationOptions, DATA_FILE, METADATA_FILE};
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};
use thinly_lab::kernel::opscript::Pattern;

const BS: u64 = 64 << 10;
const MIB: u64 = 1 << 20;
const VOL_BYTES: u64 = 4 * MIB;

fn seed(word: &str, offset: u64, len: u64) -> Vec<u8> {
    Pattern::Seed(word.into()).bytes(offset, len)
}

/// origin written, snap1 taken, part of the origin rewritten, snap2 taken; returns the
/// snapshots' bytes.
fn build_pool(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let opts = PoolOptions {
        data_size_bytes: 512 * BS,
        metadata_size_bytes: Some(8 * MIB),
        settings: PoolSettings { data_block_size_bytes: BS, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir, &opts).expect("creating the pool");
    let origin = pool.create_volume("origin", VOL_BYTES).expect("origin");
    origin.write(0, &seed("first", 0, VOL_BYTES), false).expect("write");
    pool.snapshot("origin", "snap1", false).expect("snap1");
    origin.write(MIB, &seed("second", MIB, 2 * MIB), false).expect("write");
    pool.snapshot("origin", "snap2", false).expect("snap2");
    let mut out = BTreeMap::new();
    for name in ["snap1", "snap2"] {
        let mut buf = vec![0u8; VOL_BYTES as usize];
        pool.volume(name).expect("snapshot").read(0, &mut buf).expect("read");
        out.insert(name.to_string(), buf);
    }
    pool.close().expect("close");
    out
}

/// Zeroes the details tree's root block in a copy of the metadata and repairs the copy
/// back into the pool's metadata file.
fn lose_details_and_repair(dir: &Path, work: &Work) {
    let meta = dir.join(METADATA_FILE);
    let mut bytes = std::fs::read(&meta).expect("read metadata");
    let droot = Superblock::decode(&bytes[..4096]).device_details_root.0 as usize;
    bytes[droot * 4096..(droot + 1) * 4096].fill(0);
    let bad = work.path("damaged.meta");
    std::fs::write(&bad, &bytes).expect("write damaged copy");
    std::fs::write(&meta, vec![0u8; bytes.len()]).expect("clear the metadata");
    let input: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&bad, true).expect("open"));
    let output: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&meta, false).expect("open"));
    let stats = repair(input, output, Overrides::default()).expect("repair");
    assert_eq!(stats.nr_devices, 3, "{stats:?}");
    if let Some((clean, out)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check of the repaired metadata:\n{out}");
    }
}

#[test]
fn the_kernel_writing_a_repaired_origin_leaves_its_snapshots_unchanged() {
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("kernel-repaired-pool");
    let dir = work.sub("pool");
    let before = build_pool(&dir);
    lose_details_and_repair(&dir, &work);
    let act = Activation::from_pool_dir(
        &dir,
        &ActivationOptions { pool_name: Some("rpool".into()), thin_prefix: String::new() },
    )
    .expect("activation tables");
    let share = work.sub("share");
    std::fs::write(share.join("activate.sh"), act.guest_script(METADATA_FILE, DATA_FILE))
        .expect("write activate.sh");
    let third = seed("third", 0, VOL_BYTES);
    std::fs::write(share.join("third.bin"), &third).expect("write third.bin");
    let origin = &act.thins.iter().find(|t| t.volume == "origin").expect("origin").name;
    let script = format!(
        ". /host/activate.sh\ncheck \"the repaired pool activates\" pool_activate\n\
         check \"the kernel overwrites the origin\" dd if=/host/third.bin of=/dev/mapper/{origin} bs=65536 oflag=direct conv=notrunc\n\
         log \"pool status: $(dmsetup status $POOL_NAME)\"\ncheck \"teardown\" pool_deactivate\n\
         check \"thin_check in the guest\" thin_check $META\nfinish\n"
    );
    let run = Guest::new().disk(&dir.join(METADATA_FILE)).disk(&dir.join(DATA_FILE)).run(
        &share,
        "repaired-pool.sh",
        &script,
    );
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    run.expect_ok("the kernel on the repaired pool");

    let pool = Pool::open(&dir, IoMode::Auto).expect("thinly reopens the pool");
    let mut buf = vec![0u8; VOL_BYTES as usize];
    pool.volume("origin").expect("origin").read(0, &mut buf).expect("read");
    assert!(buf == third, "the origin reads what the kernel wrote");
    for (name, want) in &before {
        pool.volume(name).expect("snapshot").read(0, &mut buf).expect("read");
        let bad: Vec<u64> = (0..VOL_BYTES / BS)
            .filter(|&b| {
                let r = (b * BS) as usize..((b + 1) * BS) as usize;
                buf[r.clone()] != want[r]
            })
            .collect();
        assert!(bad.is_empty(), "the kernel's writes to the origin changed {name} at {bad:?}");
    }
    pool.close().expect("close");
}
