//! Device operations refuse bad input with typed errors that change nothing; the metadata
//! space map grows online when the metadata file grows; the data space map refuses to
//! shrink.

mod common;

use std::sync::Arc;
use thinly_engine::io::{BlockDevice, FileDevice};
use thinly_engine::thin::{check, CheckOptions, ThinMetadata};
use thinly_engine::{DevId, Error, VirtBlock};

fn fresh(blocks: u64) -> (tempfile::TempDir, std::path::PathBuf, Arc<FileDevice>, ThinMetadata) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata");
    let dev = Arc::new(FileDevice::create(&path, blocks).unwrap());
    let md = ThinMetadata::format(dev.clone(), 128, 10_000, 1 << 20).unwrap();
    (dir, path, dev, md)
}

#[test]
fn a_wrong_old_transaction_id_is_refused_without_opening_a_transaction() {
    let (_d, _p, _dev, mut md) = fresh(1024);
    md.set_transaction_id(0, 18).unwrap();
    md.commit().unwrap();
    assert!(matches!(
        md.set_transaction_id(17, 19),
        Err(Error::TransactionId { expected: 17, actual: 18 })
    ));
    assert!(!md.has_changes(), "a refused set_transaction_id opened a transaction");
    assert_eq!(md.transaction_id(), 18);
    md.set_transaction_id(18, 19).unwrap();
    assert!(md.has_changes());
    assert_eq!(md.transaction_id(), 19);
}

#[test]
fn bad_ids_duplicates_and_unknown_origins_are_typed_errors_that_change_nothing() {
    let (_d, _p, _dev, mut md) = fresh(1024);
    md.create_thin(DevId(1)).unwrap();
    let b = md.alloc_data_block().unwrap();
    md.insert_mapping(DevId(1), VirtBlock(3), b).unwrap();
    md.commit().unwrap();
    let before = (md.status(), md.device_ids(), md.time(), md.device_details(DevId(1)).unwrap());
    assert!(matches!(md.create_thin(DevId(1 << 24)), Err(Error::Invalid(_))));
    assert!(matches!(md.create_thin(DevId(1)), Err(Error::DeviceExists(DevId(1)))));
    assert!(matches!(md.create_snap(DevId(2), DevId(9)), Err(Error::UnknownDevice(DevId(9)))));
    assert!(matches!(md.create_snap(DevId(1), DevId(1)), Err(Error::DeviceExists(DevId(1)))));
    assert!(matches!(md.delete(DevId(9)), Err(Error::UnknownDevice(DevId(9)))));
    assert!(matches!(
        md.set_transaction_id(5, 6),
        Err(Error::TransactionId { expected: 5, actual: 0 })
    ));
    assert!(matches!(
        md.insert_mapping(DevId(9), VirtBlock(0), b),
        Err(Error::UnknownDevice(DevId(9)))
    ));
    assert!(matches!(md.release_metadata_snap(), Err(Error::NoMetadataSnap)));
    let after = (md.status(), md.device_ids(), md.time(), md.device_details(DevId(1)).unwrap());
    assert_eq!(before, after);
    md.reserve_metadata_snap().unwrap();
    assert!(matches!(md.reserve_metadata_snap(), Err(Error::MetadataSnapExists(_))));
}

#[test]
fn the_metadata_space_map_grows_online_with_the_metadata_file() {
    let (_d, path, dev, mut md) = fresh(64);
    md.create_thin(DevId(0)).unwrap();
    md.commit().unwrap();
    // 64 blocks hold a few thousand mappings at most: fill until the metadata is full.
    let mut v = 0;
    let full = loop {
        let b = md.alloc_data_block().unwrap();
        match md.insert_mapping(DevId(0), VirtBlock(v * 7), b) {
            Ok(_) => v += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, Error::MetadataNoSpace { .. }), "{full}");
    md.abort().unwrap();
    assert_eq!(md.status().total_metadata_blocks, 64);
    dev.resize(4096).unwrap();
    md.resize_metadata().unwrap();
    assert_eq!(md.status().total_metadata_blocks, 4096);
    for v in 0..20_000u64 {
        let b = md.alloc_data_block().unwrap_or_else(|_| {
            md.resize_data(md.nr_data_blocks() + 10_000).unwrap();
            md.alloc_data_block().unwrap()
        });
        md.insert_mapping(DevId(0), VirtBlock(v * 3), b).unwrap();
    }
    md.commit().unwrap();
    assert!(
        matches!(md.resize_data(10), Err(Error::Invalid(_))),
        "the data space map never shrinks"
    );
    drop(md);
    let d: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path, true).unwrap());
    let report = check(d, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(tool) = common::real_tool("thin_check") {
        let (rc, out, err) = common::run_tool(&tool, &[path.to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}{err}");
    }
}
