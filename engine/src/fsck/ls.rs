//! thin_ls as library code: per-device figures (mapped, exclusive and shared blocks,
//! highest mapped block, details) and the table thin_ls prints (right-aligned columns,
//! one space after each cell, 0.9.0's human units).

use std::sync::Arc;

use super::check::MAX_DENSE_DATA_BLOCKS;
use super::dump::{read_details, read_top_level, reader, select_roots, walk_mappings};
use super::error::{Error, Result};
use crate::io::BlockDevice;
use crate::limits::SECTOR_SIZE;
use std::collections::HashMap;

/// The columns thin_ls knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    Dev,
    MappedBlocks,
    ExclusiveBlocks,
    SharedBlocks,
    MappedSectors,
    ExclusiveSectors,
    SharedSectors,
    MappedBytes,
    ExclusiveBytes,
    SharedBytes,
    Mapped,
    Exclusive,
    Shared,
    Transaction,
    CreateTime,
    SnapTime,
    HighestBlock,
    HighestSector,
    HighestByte,
    HighestMapped,
}

const NAMES: [(Field, &str); 20] = [
    (Field::Dev, "DEV"),
    (Field::MappedBlocks, "MAPPED_BLOCKS"),
    (Field::ExclusiveBlocks, "EXCLUSIVE_BLOCKS"),
    (Field::SharedBlocks, "SHARED_BLOCKS"),
    (Field::MappedSectors, "MAPPED_SECTORS"),
    (Field::ExclusiveSectors, "EXCLUSIVE_SECTORS"),
    (Field::SharedSectors, "SHARED_SECTORS"),
    (Field::MappedBytes, "MAPPED_BYTES"),
    (Field::ExclusiveBytes, "EXCLUSIVE_BYTES"),
    (Field::SharedBytes, "SHARED_BYTES"),
    (Field::Mapped, "MAPPED"),
    (Field::Exclusive, "EXCLUSIVE"),
    (Field::Shared, "SHARED"),
    (Field::Transaction, "TRANSACTION"),
    (Field::CreateTime, "CREATE_TIME"),
    (Field::SnapTime, "SNAP_TIME"),
    (Field::HighestBlock, "HIGHEST_BLOCK"),
    (Field::HighestSector, "HIGHEST_SECTOR"),
    (Field::HighestByte, "HIGHEST_BYTE"),
    (Field::HighestMapped, "HIGHEST_MAPPED"),
];

/// thin_ls's default columns.
pub const DEFAULT_FIELDS: [Field; 4] =
    [Field::Dev, Field::Mapped, Field::CreateTime, Field::SnapTime];

impl Field {
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|n| n.0 == self).map_or("?", |n| n.1)
    }

    /// Parses `-o`'s comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Field>> {
        s.split(',')
            .map(|name| {
                NAMES
                    .iter()
                    .find(|n| n.1 == name.trim())
                    .map(|n| n.0)
                    .ok_or_else(|| Error::Unusable(format!("unknown field '{name}'")))
            })
            .collect()
    }

    fn needs_sharing(self) -> bool {
        matches!(
            self,
            Field::ExclusiveBlocks
                | Field::SharedBlocks
                | Field::ExclusiveSectors
                | Field::SharedSectors
                | Field::ExclusiveBytes
                | Field::SharedBytes
                | Field::Exclusive
                | Field::Shared
        )
    }

    fn needs_highest(self) -> bool {
        matches!(
            self,
            Field::HighestBlock | Field::HighestSector | Field::HighestByte | Field::HighestMapped
        )
    }
}

/// One device's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceRow {
    pub dev_id: u64,
    pub mapped_blocks: u64,
    pub exclusive_blocks: u64,
    pub shared_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    pub snap_time: u32,
    pub highest_block: Option<u64>,
}

/// Computes every device's row; walks the mapping trees only when `fields` need it.
pub fn list(
    dev: Arc<dyn BlockDevice>,
    metadata_snap: bool,
    fields: &[Field],
) -> Result<(u32, Vec<DeviceRow>)> {
    let mut bm = reader(dev);
    let roots = select_roots(&mut bm, metadata_snap.then_some(None))?;
    let block_size = roots.sb.data_block_size_sectors;
    let details = read_details(&mut bm, roots.details_root)?;
    let tops = read_top_level(&mut bm, roots.mapping_root)?;
    let sharing = fields.iter().any(|f| f.needs_sharing());
    let highest = fields.iter().any(|f| f.needs_highest());
    // Devices mapping each data block (saturating at 2: shared is all we need). Dense
    // for data devices up to MAX_DENSE_DATA_BLOCKS, a map beyond.
    let dense = roots.sb.data_sm_root.nr_blocks <= MAX_DENSE_DATA_BLOCKS;
    let mut users: Vec<u8> = Vec::new();
    let mut sparse: HashMap<u64, u8> = HashMap::new();
    if sharing {
        if dense {
            users = vec![0; roots.sb.data_sm_root.nr_blocks as usize];
        }
        for root in tops.values() {
            walk_mappings(&mut bm, *root, &mut |_, bt| {
                let u = match users.get_mut(bt.block as usize) {
                    Some(u) => u,
                    None => sparse.entry(bt.block).or_default(),
                };
                *u = (*u + 1).min(2);
                Ok(())
            })?;
        }
    }
    let nr_users = |b: u64| users.get(b as usize).or_else(|| sparse.get(&b)).copied().unwrap_or(0);
    let mut rows = Vec::new();
    for (&id, d) in &details {
        let mut row = DeviceRow {
            dev_id: id,
            mapped_blocks: d.mapped_blocks,
            transaction: d.transaction_id,
            creation_time: d.creation_time,
            snap_time: d.snapshotted_time,
            ..DeviceRow::default()
        };
        if let (true, Some(root)) = (sharing || highest, tops.get(&id)) {
            let (mut excl, mut n, mut hi) = (0u64, 0u64, None);
            walk_mappings(&mut bm, *root, &mut |k, bt| {
                n += 1;
                hi = Some(k);
                if nr_users(bt.block) == 1 {
                    excl += 1;
                }
                Ok(())
            })?;
            row.exclusive_blocks = excl;
            row.shared_blocks = n.saturating_sub(excl);
            row.highest_block = hi;
        }
        rows.push(row);
    }
    Ok((block_size, rows))
}

/// 0.9.0's human-readable size: the largest binary unit that leaves at least 10 units,
/// rounded to the nearest; "0" for nothing.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes == 0 {
        return "0".into();
    }
    let mut chosen: Option<(u64, &str)> = None;
    let mut unit = 1024u64;
    for name in UNITS {
        if bytes / unit >= 10 || (chosen.is_none() && name == "KiB") {
            chosen = Some((unit, name));
        }
        match unit.checked_mul(1024) {
            Some(u) => unit = u,
            None => break,
        }
    }
    match chosen {
        Some((u, name)) if bytes >= u => format!("{}{name}", (bytes + u / 2) / u),
        _ => format!("{bytes}B"),
    }
}

fn cell(f: Field, r: &DeviceRow, bs: u64) -> String {
    // Saturating: the figures come from disk and may be damaged.
    let sectors = |b: u64| b.saturating_mul(bs);
    let bytes = |b: u64| b.saturating_mul(bs).saturating_mul(SECTOR_SIZE);
    let hi = r.highest_block;
    match f {
        Field::Dev => r.dev_id.to_string(),
        Field::MappedBlocks => r.mapped_blocks.to_string(),
        Field::ExclusiveBlocks => r.exclusive_blocks.to_string(),
        Field::SharedBlocks => r.shared_blocks.to_string(),
        Field::MappedSectors => sectors(r.mapped_blocks).to_string(),
        Field::ExclusiveSectors => sectors(r.exclusive_blocks).to_string(),
        Field::SharedSectors => sectors(r.shared_blocks).to_string(),
        Field::MappedBytes => bytes(r.mapped_blocks).to_string(),
        Field::ExclusiveBytes => bytes(r.exclusive_blocks).to_string(),
        Field::SharedBytes => bytes(r.shared_blocks).to_string(),
        Field::Mapped => human_size(bytes(r.mapped_blocks)),
        Field::Exclusive => human_size(bytes(r.exclusive_blocks)),
        Field::Shared => human_size(bytes(r.shared_blocks)),
        Field::Transaction => r.transaction.to_string(),
        Field::CreateTime => r.creation_time.to_string(),
        Field::SnapTime => r.snap_time.to_string(),
        Field::HighestBlock => hi.map_or("-".into(), |h| h.to_string()),
        Field::HighestSector => {
            hi.map_or("-".into(), |h| sectors(h.saturating_add(1)).saturating_sub(1).to_string())
        }
        Field::HighestByte => {
            hi.map_or("-".into(), |h| bytes(h.saturating_add(1)).saturating_sub(1).to_string())
        }
        Field::HighestMapped => hi.map_or("-".into(), |h| human_size(bytes(h.saturating_add(1)))),
    }
}

/// The table thin_ls prints.
pub fn render(fields: &[Field], rows: &[DeviceRow], block_size: u32, headers: bool) -> String {
    let bs = u64::from(block_size);
    let mut table: Vec<Vec<String>> = Vec::new();
    if headers {
        table.push(fields.iter().map(|f| f.name().to_string()).collect());
    }
    for r in rows {
        table.push(fields.iter().map(|f| cell(*f, r, bs)).collect());
    }
    let widths: Vec<usize> = (0..fields.len())
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        for (c, w) in row.iter().zip(&widths) {
            out.push_str(&format!("{c:>w$} "));
        }
        out.push('\n');
    }
    out
}
