//! What a pool holds, read from its files with this engine (read-only): every device's
//! mappings, the sharing structure, the space figures, and per-block checksums of what a
//! reader of each device sees.
//!
//! The sharing structure is logical: which (device, virtual block) pairs map the same data
//! block, found by walking every device's mappings. (The data space map's reference counts
//! also count shared B-tree leaves, so they depend on the tree's shape, not only on what a
//! reader sees.)

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use thinly_engine::error::{Error, Result};
use thinly_engine::io::{BlockDevice, FileDevice};
use thinly_engine::thin::{OpenOptions, ThinMetadata};
use thinly_engine::units::VirtBlock;

/// A block's checksum; 0 stands for a block of zeros (what an unmapped block reads as).
pub type Sum = u64;

/// The checksum of one block: CRC32C of each half, so 64 bits; 0 only for zeros.
pub fn block_sum(buf: &[u8]) -> Sum {
    if buf.iter().all(|&b| b == 0) {
        return 0;
    }
    let (a, b) = buf.split_at(buf.len() / 2);
    let s = ((crc32c::crc32c(a) as u64) << 32) | crc32c::crc32c(b) as u64;
    s.max(1)
}

/// One thin device as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceView {
    pub dev_id: u64,
    /// `mapped_blocks` of the device details.
    pub details_mapped_blocks: u64,
    /// Virtual block → data block.
    pub mappings: BTreeMap<u64, u64>,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

/// A pool's metadata, as far as a comparison cares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetaView {
    pub devices: BTreeMap<u64, DeviceView>,
    pub used_data_blocks: u64,
    pub total_data_blocks: u64,
    pub used_metadata_blocks: u64,
    pub total_metadata_blocks: u64,
    pub block_size_bytes: u64,
    pub transaction_id: u64,
    pub time: u32,
}

/// Per device, the checksum of every virtual block a reader sees.
pub type ReaderView = BTreeMap<u64, Vec<Sum>>;

/// A group of (device, virtual block) pairs that map one data block.
pub type ShareGroup = Vec<(u64, u64)>;

impl MetaView {
    /// Reads the metadata file (read-only).
    pub fn read(meta_path: &Path) -> Result<MetaView> {
        let dev: Arc<dyn BlockDevice> = Arc::new(
            FileDevice::open(meta_path, true)
                .map_err(|e| Error::io(format!("opening {}", meta_path.display()), e))?,
        );
        let mut md =
            ThinMetadata::open(dev, OpenOptions { read_only: true, ..Default::default() })?;
        let st = md.status();
        let mut devices = BTreeMap::new();
        for id in md.device_ids() {
            let d = md.device_details(id)?;
            let mut mappings = BTreeMap::new();
            md.for_each_mapping(id, VirtBlock(0), VirtBlock(u64::MAX), &mut |v, m| {
                mappings.insert(v.0, m.data_block.0);
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            devices.insert(
                id.0,
                DeviceView {
                    dev_id: id.0,
                    details_mapped_blocks: d.mapped_blocks,
                    mappings,
                    creation_time: d.creation_time,
                    snapshotted_time: d.snapshotted_time,
                },
            );
        }
        Ok(MetaView {
            devices,
            used_data_blocks: st.used_data_blocks,
            total_data_blocks: st.total_data_blocks,
            used_metadata_blocks: st.used_metadata_blocks,
            total_metadata_blocks: st.total_metadata_blocks,
            block_size_bytes: st.data_block_size_sectors as u64 * 512,
            transaction_id: st.transaction_id,
            time: md.time(),
        })
    }

    /// How many mappings use each data block.
    pub fn data_block_users(&self) -> BTreeMap<u64, u64> {
        let mut n = BTreeMap::new();
        for d in self.devices.values() {
            for &b in d.mappings.values() {
                *n.entry(b).or_insert(0) += 1;
            }
        }
        n
    }

    /// Every group of two or more (device, vblock) pairs that share a data block, sorted;
    /// data block numbers are left out, so pools that allocated differently compare equal.
    pub fn sharing_groups(&self) -> BTreeSet<ShareGroup> {
        let mut by_block: BTreeMap<u64, ShareGroup> = BTreeMap::new();
        for d in self.devices.values() {
            for (&v, &b) in &d.mappings {
                by_block.entry(b).or_default().push((d.dev_id, v));
            }
        }
        by_block
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect()
    }

    /// (exclusive, shared) mapped blocks of a device.
    pub fn exclusive_shared(&self, dev: u64) -> (u64, u64) {
        let users = self.data_block_users();
        let Some(d) = self.devices.get(&dev) else { return (0, 0) };
        let shared = d.mappings.values().filter(|b| users.get(b).copied().unwrap_or(0) > 1).count();
        ((d.mappings.len() - shared) as u64, shared as u64)
    }

    /// What a reader would see through the mappings, read from the data file: per device,
    /// `nr_blocks` sums (unmapped blocks read as zeros).
    pub fn reader_view_from_data(&self, data_path: &Path, nr_blocks: u64) -> Result<ReaderView> {
        let f = std::fs::File::open(data_path)
            .map_err(|e| Error::io(format!("opening {}", data_path.display()), e))?;
        let bs = self.block_size_bytes;
        let mut buf = vec![0u8; bs as usize];
        let mut cache: BTreeMap<u64, Sum> = BTreeMap::new();
        let mut out = ReaderView::new();
        for d in self.devices.values() {
            let mut sums = vec![0; nr_blocks as usize];
            for (&v, &b) in d.mappings.range(..nr_blocks) {
                let s = match cache.get(&b) {
                    Some(s) => *s,
                    None => {
                        read_full(&f, &mut buf, b * bs)
                            .map_err(|e| Error::io(format!("reading data block {b}"), e))?;
                        let s = block_sum(&buf);
                        cache.insert(b, s);
                        s
                    }
                };
                sums[v as usize] = s;
            }
            out.insert(d.dev_id, sums);
        }
        Ok(out)
    }
}

/// Reads `buf.len()` bytes at `offset`; bytes past the end of the file read as zeros.
fn read_full(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

/// Where each device's bytes lie in a dump image (the guest copies every device into one
/// scratch disk, one after the other).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DumpSlot {
    pub dev_id: u64,
    pub offset_bytes: u64,
    pub len_bytes: u64,
}

/// Lays out `devs` (each `len_bytes` long) one after the other from offset 0.
pub fn dump_layout(devs: &[(u64, u64)]) -> Vec<DumpSlot> {
    let mut off = 0;
    devs.iter()
        .map(|&(dev_id, len_bytes)| {
            let s = DumpSlot { dev_id, offset_bytes: off, len_bytes };
            off += len_bytes;
            s
        })
        .collect()
}

/// Per-block sums of the devices in a dump image.
pub fn reader_view_from_dump(
    image: &Path,
    slots: &[DumpSlot],
    block_bytes: u64,
) -> Result<ReaderView> {
    let f = std::fs::File::open(image)
        .map_err(|e| Error::io(format!("opening {}", image.display()), e))?;
    let mut buf = vec![0u8; block_bytes as usize];
    let mut out = ReaderView::new();
    for s in slots {
        let n = s.len_bytes / block_bytes;
        let mut sums = Vec::with_capacity(n as usize);
        for i in 0..n {
            read_full(&f, &mut buf, s.offset_bytes + i * block_bytes)
                .map_err(|e| Error::io(format!("reading the dump of device {}", s.dev_id), e))?;
            sums.push(block_sum(&buf));
        }
        out.insert(s.dev_id, sums);
    }
    Ok(out)
}
