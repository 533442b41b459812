//! The engine's fuzz harnesses: each takes arbitrary bytes and must never panic, hang or
//! allocate without bound. Each also checks an oracle where one exists, so a fuzzer finds
//! wrong answers and not only crashes:
//! - `metadata_open`: a metadata image (4 KiB blocks, as many as the input holds) is
//!   checked, dumped and opened. Metadata the checker passes must open and walk cleanly.
//! - `xml_restore`: `thin_restore`'s XML reader and the restorer. What restores must pass
//!   the checker and dump back to XML that restores to the same dump.
//! - `pool_ops`: management operations, dm messages and I/O on an in-memory pool, read from
//!   the input as an op script. After every op the metadata must still check clean, and a
//!   refused op must leave the metadata as it was.

use std::ops::ControlFlow;
use std::sync::Arc;
use thinly_engine::fsck::check::{check, CheckOptions};
use thinly_engine::fsck::dump::{dump, DumpOptions};
use thinly_engine::fsck::restore::{restore_xml, Overrides};
use thinly_engine::fsck::xml::{dump_writer, Dialect};
use thinly_engine::io::BlockDevice;
use thinly_engine::io::MemDevice;
use thinly_engine::thin::{OpenOptions, ThinMetadata};
use thinly_engine::VirtBlock;

const BLOCK: usize = 4096;
/// Largest metadata image a fuzz input describes (the seeds are a few hundred KiB).
const MAX_IMAGE_BLOCKS: usize = 512;
/// Metadata blocks a restore may write into.
const RESTORE_BLOCKS: u64 = 1024;

/// A metadata image from raw bytes: zero-padded to whole blocks, at least the superblock.
fn image_device(data: &[u8]) -> Arc<dyn BlockDevice> {
    let nr_blocks = data.len().div_ceil(BLOCK).clamp(1, MAX_IMAGE_BLOCKS);
    let mut image = vec![0u8; nr_blocks * BLOCK];
    let n = data.len().min(image.len());
    image[..n].copy_from_slice(&data[..n]);
    Arc::new(MemDevice::from_image(&image))
}

fn dump_to_vec(dev: Arc<dyn BlockDevice>) -> Option<Vec<u8>> {
    let mut w = dump_writer(Vec::new(), Dialect::default());
    dump(dev, &DumpOptions::default(), &mut w).ok()?;
    Some(w.into_inner())
}

pub fn metadata_open(data: &[u8]) {
    let dev = image_device(data);
    let clean = match check(dev.clone(), &CheckOptions::default()) {
        Ok(report) => !report.has_fatal() && report.superblock.is_some(),
        Err(_) => false,
    };
    let dumped = dump_to_vec(dev.clone());
    let opts = OpenOptions { read_only: true, ..OpenOptions::default() };
    let opened = ThinMetadata::open(dev, opts);
    if clean {
        assert!(dumped.is_some(), "metadata that checks clean must dump");
        let mut md = opened.expect("metadata that checks clean must open");
        for id in md.device_ids() {
            md.for_each_mapping(id, VirtBlock(0), VirtBlock(u64::MAX), &mut |_, _| {
                Ok(ControlFlow::Continue(()))
            })
            .expect("a clean device's mappings walk");
        }
    }
}

pub fn xml_restore(data: &[u8]) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(RESTORE_BLOCKS));
    if restore_xml(data, dev.clone(), Overrides::default()).is_err() {
        return;
    }
    let report = check(dev.clone(), &CheckOptions::default()).expect("the check runs");
    assert!(!report.has_fatal(), "restored metadata must check clean: {:?}", report.problems);
    let first = dump_to_vec(dev).expect("restored metadata dumps");
    let again: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(RESTORE_BLOCKS));
    restore_xml(&first[..], again.clone(), Overrides::default()).expect("a dump restores");
    let second = dump_to_vec(again).expect("the second restore dumps");
    assert!(first == second, "dump → restore → dump is not a fixed point");
}

mod pool_ops;
pub use pool_ops::pool_ops;
