//! Golden tests against metadata written by the real thin_restore (0.9.0 and 1.3.3) and by
//! the Linux kernel (`tests/data/samples/`): every on-disk structure decodes to the
//! values the sample's XML states, and walking the mapping trees yields exactly its
//! mappings. Then thinly changes the kernel's pool and the real thin_check still accepts it.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;
use thinly_engine::format::{checksum, BlockKind};
use thinly_engine::fsck::{parse_xml, Metadata};
use thinly_engine::io::{BlockDevice, FileDevice, MemDevice};
use thinly_engine::thin::{check, CheckOptions, OpenOptions, ThinMetadata};
use thinly_engine::{DevId, VirtBlock};

fn gunzip(name: &str) -> Vec<u8> {
    let f = std::fs::File::open(samples_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut out).unwrap();
    out
}

fn xml(name: &str) -> Metadata {
    let f = std::fs::File::open(samples_dir().join(name)).unwrap();
    parse_xml(f).unwrap().normalised().unwrap()
}

/// (image, its XML)
const PAIRS: &[(&str, &str)] = &[
    ("empty.bin.gz", "empty.xml"),
    ("snaps.bin.gz", "snaps.xml"),
    ("snaps-rs.bin.gz", "snaps.xml"),
    ("shared.bin.gz", "shared.xml"),
    ("kernel-basic.meta.gz", "kernel-basic.xml"),
];

fn expected_mappings(md: &Metadata) -> BTreeMap<u64, BTreeMap<u64, (u64, u32)>> {
    let mut out = BTreeMap::new();
    for d in &md.devices {
        let m: &mut BTreeMap<u64, (u64, u32)> = out.entry(d.details.dev_id as u64).or_default();
        for item in &d.items {
            let r = item.run().expect("normalised XML has no refs");
            for i in 0..r.len {
                m.insert(r.origin_begin + i, (r.data_begin + i, r.time));
            }
        }
    }
    out
}

fn read_all_mappings(md: &mut ThinMetadata) -> BTreeMap<u64, BTreeMap<u64, (u64, u32)>> {
    let mut out = BTreeMap::new();
    for id in md.device_ids() {
        let mut m = BTreeMap::new();
        md.for_each_mapping(id, VirtBlock(0), VirtBlock(u64::MAX), &mut |v, mp| {
            m.insert(v.0, (mp.data_block.0, mp.time));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        out.insert(id.0, m);
    }
    out
}

#[test]
fn every_block_of_every_sample_carries_a_known_checksum() {
    for (image, _) in PAIRS.iter().chain([("generated.bin.gz", "")].iter()) {
        let bytes = gunzip(image);
        for (b, block) in bytes.chunks_exact(4096).enumerate() {
            if block.iter().all(|&x| x == 0) {
                continue;
            }
            let kind = checksum::identify(block);
            // Blocks freed by the writer may hold stale bytes; the referenced ones must check.
            if let Some(kind) = kind {
                if kind != BlockKind::Superblock || b == 0 {
                    checksum::verify(block, thinly_engine::MetaBlock(b as u64), kind).unwrap();
                }
            }
        }
    }
}

#[test]
fn samples_open_with_the_superblock_details_and_mappings_of_their_xml() {
    for (image, xml_name) in PAIRS {
        let want = xml(xml_name);
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_image(&gunzip(image)));
        let mut md =
            ThinMetadata::open(dev, OpenOptions { read_only: true, ..Default::default() }).unwrap();
        let sb = md.superblock().clone();
        assert_eq!(sb.time, want.superblock.time, "{image}: time");
        assert_eq!(sb.trans_id, want.superblock.transaction, "{image}: transaction");
        assert_eq!(sb.data_block_size_sectors, want.superblock.data_block_size, "{image}");
        assert_eq!(md.nr_data_blocks(), want.superblock.nr_data_blocks, "{image}: nr_data_blocks");
        let ids: Vec<u64> = md.device_ids().iter().map(|d| d.0).collect();
        assert_eq!(ids, want.devices.iter().map(|d| d.details.dev_id as u64).collect::<Vec<_>>());
        for d in &want.devices {
            let got = md.device_details(DevId(d.details.dev_id as u64)).unwrap();
            assert_eq!(
                got.mapped_blocks, d.details.mapped_blocks,
                "{image} dev {}",
                d.details.dev_id
            );
            assert_eq!(got.transaction_id, d.details.transaction);
            assert_eq!(got.creation_time, d.details.creation_time);
            assert_eq!(got.snapshotted_time, d.details.snap_time);
        }
        assert_eq!(read_all_mappings(&mut md), expected_mappings(&want), "{image}: mappings");
    }
}

#[test]
fn the_kernels_pool_takes_a_snapshot_and_writes_and_still_passes_thin_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernel.meta");
    std::fs::write(&path, gunzip("kernel-basic.meta.gz")).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path, false).unwrap());
    let mut md = ThinMetadata::open(dev, OpenOptions::default()).unwrap();
    let mut want = read_all_mappings(&mut md);
    md.create_snap(DevId(3), DevId(1)).unwrap();
    want.insert(3, want[&1].clone());
    let time = md.time();
    for v in [0u64, 16, 5000] {
        // A write to the origin: its old mappings predate the snapshot, so break sharing.
        let m = md.lookup(DevId(1), VirtBlock(v)).unwrap();
        assert!(m.is_none_or(|m| m.maybe_shared));
        let b = md.alloc_data_block().unwrap();
        md.insert_mapping(DevId(1), VirtBlock(v), b).unwrap();
        want.get_mut(&1).unwrap().insert(v, (b.0, time));
    }
    md.commit().unwrap();
    drop(md);
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path, true).unwrap());
    let mut md =
        ThinMetadata::open(dev.clone(), OpenOptions { read_only: true, ..Default::default() })
            .unwrap();
    assert_eq!(read_all_mappings(&mut md), want);
    let report = check(dev, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(thin_check) = real_tool("thin_check") {
        let (rc, out, err) = run_tool(&thin_check, &[path.to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}{err}");
    }
}

#[test]
fn metadata_that_is_not_dm_thin_is_refused_clearly() {
    let zero: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64));
    let e = ThinMetadata::open(zero, OpenOptions::default()).err().unwrap();
    assert!(matches!(e, thinly_engine::Error::BadSuperblock(_)), "{e}");
    let mut junk = gunzip("snaps.bin.gz");
    junk[100] ^= 0xFF;
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_image(&junk));
    assert!(matches!(
        ThinMetadata::open(dev, OpenOptions::default()),
        Err(thinly_engine::Error::BadSuperblock(_))
    ));
    // needs_check: refused read-write, allowed read-only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    std::fs::write(&path, gunzip("snaps.bin.gz")).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path, false).unwrap());
    let mut md = ThinMetadata::open(dev.clone(), OpenOptions::default()).unwrap();
    md.set_needs_check().unwrap();
    drop(md);
    assert!(matches!(
        ThinMetadata::open(dev.clone(), OpenOptions::default()),
        Err(thinly_engine::Error::NeedsCheck)
    ));
    ThinMetadata::open(dev, OpenOptions { read_only: true, ..Default::default() }).unwrap();
}
