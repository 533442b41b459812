//! Metadata that thinly grew online is metadata the kernel accepts and uses: thinly fills a
//! small metadata file, grows it with `Pool::resize_metadata` while a volume is open, and
//! writes on; the guest kernel activates the pool, sees the grown size in its status,
//! writes enough new blocks to allocate metadata past the old end, and tears down; the
//! real thin_check is clean and thinly reopens the pool and reads every byte back. One
//! guest boot.

use thinly_lab::kernel::harness;

use harness::{Guest, Work};
use std::path::Path;
use thinly_engine::io::IoMode;
use thinly_engine::kernel::activate::{Activation, ActivationOptions, DATA_FILE, METADATA_FILE};
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};
use thinly_lab::kernel::opscript::Pattern;

const BS: u64 = 64 << 10;
const OLD_META_BLOCKS: u64 = 64;
const NEW_META_BLOCKS: u64 = 256;
const VOL_BYTES: u64 = 512 << 20;
/// Where (and how much) the kernel writes: fresh blocks, so new mappings.
const KERNEL_AT: u64 = 384 << 20;
const KERNEL_BYTES: u64 = 64 << 20;

fn block_bytes(b: u64) -> Vec<u8> {
    Pattern::Seed(format!("grown-{b}")).bytes(b * BS, 512)
}

/// Fills the metadata to three quarters, grows it, writes on; returns the blocks written.
fn build_pool(dir: &Path) -> u64 {
    let opts = PoolOptions {
        data_size_bytes: VOL_BYTES,
        metadata_size_bytes: Some(OLD_META_BLOCKS * 4096),
        settings: PoolSettings { data_block_size_bytes: BS, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir, &opts).expect("creating the pool");
    let v = pool.create_volume("v", VOL_BYTES).unwrap();
    let mut b = 0;
    while pool.status().used_metadata_blocks < OLD_META_BLOCKS * 3 / 4 {
        v.write(b * BS, &block_bytes(b), false).unwrap();
        b += 1;
        if b % 64 == 0 {
            pool.commit().unwrap();
        }
    }
    pool.resize_metadata(NEW_META_BLOCKS * 4096).expect("growing the metadata online");
    for _ in 0..500 {
        v.write(b * BS, &block_bytes(b), false).unwrap();
        b += 1;
    }
    assert!(b * BS < KERNEL_AT, "the kernel's range stays unmapped");
    drop(v);
    pool.close().unwrap();
    b
}

#[test]
fn the_kernel_uses_metadata_that_thinly_grew_online() {
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("kernel-grown-metadata");
    let dir = work.sub("pool");
    let written = build_pool(&dir);
    let act = Activation::from_pool_dir(
        &dir,
        &ActivationOptions { pool_name: Some("tpool".into()), thin_prefix: String::new() },
    )
    .unwrap();
    let share = work.sub("share");
    std::fs::write(share.join("activate.sh"), act.guest_script(METADATA_FILE, DATA_FILE)).unwrap();
    let kernel_bytes = Pattern::Seed("kernel".into()).bytes(KERNEL_AT, KERNEL_BYTES);
    std::fs::write(share.join("w.bin"), &kernel_bytes).unwrap();
    let name = &act.thins[0].name;
    let script = format!(
        ". /host/activate.sh\ncheck \"the pool activates\" pool_activate\n\
         log \"pool status: $(dmsetup status $POOL_NAME)\"\n\
         check \"the kernel sees {NEW_META_BLOCKS} metadata blocks\" sh -c \"dmsetup status $POOL_NAME | grep -q ' [0-9]*/{NEW_META_BLOCKS} '\"\n\
         check \"the kernel writes new blocks\" dd if=/host/w.bin of=/dev/mapper/{name} bs=65536 seek={} count={} oflag=direct conv=notrunc\n\
         log \"pool status: $(dmsetup status $POOL_NAME)\"\n\
         check \"teardown\" pool_deactivate\n\
         check \"thin_check in the guest\" thin_check $META\nfinish\n",
        KERNEL_AT / BS,
        KERNEL_BYTES / BS
    );
    let run = Guest::new().disk(&dir.join(METADATA_FILE)).disk(&dir.join(DATA_FILE)).run(
        &share,
        "grown-metadata.sh",
        &script,
    );
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    run.expect_ok("the kernel on metadata thinly grew");

    let meta = dir.join(METADATA_FILE);
    if let Some((clean, out)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check after the kernel's writes:\n{out}");
    }
    assert!(harness::engine_check(&meta).is_empty(), "{:?}", harness::engine_check(&meta));
    let pool = Pool::open(&dir, IoMode::Auto).expect("thinly reopens the pool");
    let st = pool.status();
    assert_eq!(st.total_metadata_blocks, NEW_META_BLOCKS);
    assert!(
        st.used_metadata_blocks > OLD_META_BLOCKS,
        "the kernel's mappings live past the old end: {st}"
    );
    let v = pool.volume("v").unwrap();
    for b in 0..written {
        let mut got = vec![0u8; 512];
        v.read(b * BS, &mut got).unwrap();
        assert!(got == block_bytes(b), "block {b} as thinly wrote it");
    }
    let mut got = vec![0u8; KERNEL_BYTES as usize];
    v.read(KERNEL_AT, &mut got).unwrap();
    assert!(got == kernel_bytes, "the kernel's writes read back");
    drop(v);
    pool.close().unwrap();
}
