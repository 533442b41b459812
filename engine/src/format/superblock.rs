//! The superblock at metadata block 0 (spec §3) and the space-map root it embeds.

use super::{le_u32, le_u64, put_u32, put_u64};
use crate::error::{Error, Result};
use crate::units::MetaBlock;

/// `magic`: 27022010.
pub const SUPERBLOCK_MAGIC: u64 = 27_022_010;
/// The version the kernel and the tools write.
pub const SUPERBLOCK_VERSION: u32 = 2;
/// Superblock flag bit 0: the kernel found a metadata error; check before writing.
pub const FLAG_NEEDS_CHECK: u32 = 1;
/// Meaningful bytes of the superblock; it must fit one 512-byte sector (spec §3).
pub const SUPERBLOCK_SIZE: usize = 364;
const _: () = assert!(SUPERBLOCK_SIZE <= 512);

// Byte offsets, spec §3 table.
const OFF_FLAGS: usize = 4;
const OFF_UUID: usize = 16;
const OFF_MAGIC: usize = 32;
const OFF_VERSION: usize = 40;
const OFF_TIME: usize = 44;
const OFF_TRANS_ID: usize = 48;
const OFF_HELD_ROOT: usize = 56;
const OFF_DATA_SM_ROOT: usize = 64;
const OFF_META_SM_ROOT: usize = 192;
const OFF_MAPPING_ROOT: usize = 320;
const OFF_DETAILS_ROOT: usize = 328;
const OFF_DATA_BLOCK_SIZE: usize = 336;
const OFF_META_BLOCK_SIZE: usize = 340;
const OFF_META_NR_BLOCKS: usize = 344;
const OFF_COMPAT: usize = 352;
const OFF_COMPAT_RO: usize = 356;
const OFF_INCOMPAT: usize = 360;
/// Each space-map root area is 128 bytes, of which the first 32 are used (spec §3).
pub const SM_ROOT_AREA: usize = 128;
pub const SM_ROOT_SIZE: usize = 32;

/// `sm_root`: what a superblock says about one space map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmRoot {
    pub nr_blocks: u64,
    pub nr_allocated: u64,
    /// Metadata sm: the index block. Data sm: root of the index b-tree.
    pub bitmap_root: MetaBlock,
    /// Root of the overflow reference-count b-tree.
    pub ref_count_root: MetaBlock,
}

impl SmRoot {
    pub fn decode(b: &[u8]) -> Self {
        SmRoot {
            nr_blocks: le_u64(b, 0),
            nr_allocated: le_u64(b, 8),
            bitmap_root: MetaBlock(le_u64(b, 16)),
            ref_count_root: MetaBlock(le_u64(b, 24)),
        }
    }

    /// Writes the whole 128-byte area: the 32 used bytes and 96 zeros.
    pub fn encode(&self, b: &mut [u8]) {
        b[..SM_ROOT_AREA].fill(0);
        put_u64(b, 0, self.nr_blocks);
        put_u64(b, 8, self.nr_allocated);
        put_u64(b, 16, self.bitmap_root.0);
        put_u64(b, 24, self.ref_count_root.0);
    }
}

/// The decoded superblock. `encode` writes the whole 4 KiB block except the checksum and
/// the self block number, which `checksum::seal` stamps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Superblock {
    pub flags: u32,
    pub uuid: [u8; 16],
    pub magic: u64,
    pub version: u32,
    pub time: u32,
    pub trans_id: u64,
    /// Block of the metadata-snapshot copy of the superblock, 0 = none.
    pub held_root: MetaBlock,
    pub data_sm_root: SmRoot,
    pub metadata_sm_root: SmRoot,
    pub data_mapping_root: MetaBlock,
    pub device_details_root: MetaBlock,
    pub data_block_size_sectors: u32,
    pub metadata_block_size_sectors: u32,
    pub metadata_nr_blocks: u64,
    pub compat_flags: u32,
    pub compat_ro_flags: u32,
    pub incompat_flags: u32,
}

impl Superblock {
    /// Decodes the fields; checks nothing but the length (the caller verifies the checksum;
    /// `validate` applies the kernel's open rules).
    pub fn decode(b: &[u8]) -> Self {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[OFF_UUID..OFF_UUID + 16]);
        Superblock {
            flags: le_u32(b, OFF_FLAGS),
            uuid,
            magic: le_u64(b, OFF_MAGIC),
            version: le_u32(b, OFF_VERSION),
            time: le_u32(b, OFF_TIME),
            trans_id: le_u64(b, OFF_TRANS_ID),
            held_root: MetaBlock(le_u64(b, OFF_HELD_ROOT)),
            data_sm_root: SmRoot::decode(&b[OFF_DATA_SM_ROOT..]),
            metadata_sm_root: SmRoot::decode(&b[OFF_META_SM_ROOT..]),
            data_mapping_root: MetaBlock(le_u64(b, OFF_MAPPING_ROOT)),
            device_details_root: MetaBlock(le_u64(b, OFF_DETAILS_ROOT)),
            data_block_size_sectors: le_u32(b, OFF_DATA_BLOCK_SIZE),
            metadata_block_size_sectors: le_u32(b, OFF_META_BLOCK_SIZE),
            metadata_nr_blocks: le_u64(b, OFF_META_NR_BLOCKS),
            compat_flags: le_u32(b, OFF_COMPAT),
            compat_ro_flags: le_u32(b, OFF_COMPAT_RO),
            incompat_flags: le_u32(b, OFF_INCOMPAT),
        }
    }

    /// Writes the whole block: fields, then zeros to the end (checksum and blocknr left 0).
    pub fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u32(b, OFF_FLAGS, self.flags);
        b[OFF_UUID..OFF_UUID + 16].copy_from_slice(&self.uuid);
        put_u64(b, OFF_MAGIC, self.magic);
        put_u32(b, OFF_VERSION, self.version);
        put_u32(b, OFF_TIME, self.time);
        put_u64(b, OFF_TRANS_ID, self.trans_id);
        put_u64(b, OFF_HELD_ROOT, self.held_root.0);
        self.data_sm_root.encode(&mut b[OFF_DATA_SM_ROOT..]);
        self.metadata_sm_root.encode(&mut b[OFF_META_SM_ROOT..]);
        put_u64(b, OFF_MAPPING_ROOT, self.data_mapping_root.0);
        put_u64(b, OFF_DETAILS_ROOT, self.device_details_root.0);
        put_u32(b, OFF_DATA_BLOCK_SIZE, self.data_block_size_sectors);
        put_u32(b, OFF_META_BLOCK_SIZE, self.metadata_block_size_sectors);
        put_u64(b, OFF_META_NR_BLOCKS, self.metadata_nr_blocks);
        put_u32(b, OFF_COMPAT, self.compat_flags);
        put_u32(b, OFF_COMPAT_RO, self.compat_ro_flags);
        put_u32(b, OFF_INCOMPAT, self.incompat_flags);
    }

    pub fn needs_check(&self) -> bool {
        self.flags & FLAG_NEEDS_CHECK != 0
    }

    /// The kernel's rules for opening (spec §3): magic, feature flags, block sizes.
    /// `for_write` additionally refuses unknown compat_ro features.
    pub fn validate(&self, for_write: bool) -> Result<()> {
        if self.magic != SUPERBLOCK_MAGIC {
            return Err(Error::BadSuperblock(format!(
                "not dm-thin metadata (magic {} instead of {SUPERBLOCK_MAGIC})",
                self.magic
            )));
        }
        if self.incompat_flags != 0 {
            return Err(Error::BadSuperblock(format!(
                "unsupported incompatible features {:#x}",
                self.incompat_flags
            )));
        }
        if for_write && self.compat_ro_flags != 0 {
            return Err(Error::BadSuperblock(format!(
                "unsupported read-only-compatible features {:#x}: open read-only",
                self.compat_ro_flags
            )));
        }
        if self.metadata_block_size_sectors != 8 {
            return Err(Error::BadSuperblock(format!(
                "metadata block size {} sectors (must be 8)",
                self.metadata_block_size_sectors
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trip_keeps_every_field() {
        let sb = Superblock {
            flags: 1,
            uuid: *b"0123456789abcdef",
            magic: SUPERBLOCK_MAGIC,
            version: 2,
            time: 7,
            trans_id: 99,
            held_root: MetaBlock(12),
            data_sm_root: SmRoot {
                nr_blocks: 1000,
                nr_allocated: 3,
                bitmap_root: MetaBlock(4),
                ref_count_root: MetaBlock(5),
            },
            metadata_sm_root: SmRoot {
                nr_blocks: 64,
                nr_allocated: 10,
                bitmap_root: MetaBlock(1),
                ref_count_root: MetaBlock(2),
            },
            data_mapping_root: MetaBlock(7),
            device_details_root: MetaBlock(6),
            data_block_size_sectors: 128,
            metadata_block_size_sectors: 8,
            metadata_nr_blocks: 64,
            compat_flags: 0,
            compat_ro_flags: 0,
            incompat_flags: 0,
        };
        let mut b = vec![0xEEu8; 4096];
        sb.encode(&mut b);
        assert!(b[SUPERBLOCK_SIZE..].iter().all(|&x| x == 0));
        assert_eq!(Superblock::decode(&b), sb);
    }
}
