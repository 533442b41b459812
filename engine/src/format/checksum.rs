//! Block checksums (spec §2): CRC-32C over bytes 4..4096 without the final inversion,
//! XOR a salt that names the block type. Offset 8 of every block holds its own number.

use super::{le_u32, le_u64, put_u32, put_u64};
use crate::error::{Error, Result};
use crate::limits::META_BLOCK_SIZE;
use crate::units::MetaBlock;

/// Offset of the checksum in every validated block.
pub const CSUM_OFFSET: usize = 0;
/// Offset of the self block number in every validated block.
pub const BLOCKNR_OFFSET: usize = 8;

/// The four validated block types and their salts (spec §2 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    Superblock,
    Node,
    Bitmap,
    Index,
}

impl BlockKind {
    pub const ALL: [BlockKind; 4] =
        [BlockKind::Superblock, BlockKind::Node, BlockKind::Bitmap, BlockKind::Index];

    pub const fn salt(self) -> u32 {
        match self {
            BlockKind::Superblock => 160_774,
            BlockKind::Node => 121_107,
            BlockKind::Bitmap => 240_779,
            BlockKind::Index => 160_478,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            BlockKind::Superblock => "superblock",
            BlockKind::Node => "btree node",
            BlockKind::Bitmap => "space map bitmap",
            BlockKind::Index => "space map index",
        }
    }
}

/// CRC-32C register over `block[4..]` starting at !0 with no final inversion.
pub fn raw_crc(block: &[u8]) -> u32 {
    debug_assert_eq!(block.len(), META_BLOCK_SIZE);
    crc32c::crc32c(&block[4..]) ^ 0xFFFF_FFFF
}

/// The checksum a block of `kind` must carry.
pub fn compute(block: &[u8], kind: BlockKind) -> u32 {
    raw_crc(block) ^ kind.salt()
}

/// Writes the self block number and the checksum: the last step before a block goes to disk.
pub fn seal(block: &mut [u8], location: MetaBlock, kind: BlockKind) {
    put_u64(block, BLOCKNR_OFFSET, location.0);
    let csum = compute(block, kind);
    put_u32(block, CSUM_OFFSET, csum);
}

/// Verifies the checksum and the self block number of a block read from `location`.
/// The live superblock is exempt from the location check only in that its location is 0.
pub fn verify(block: &[u8], location: MetaBlock, kind: BlockKind) -> Result<()> {
    let stored = le_u32(block, CSUM_OFFSET);
    let computed = compute(block, kind);
    if stored != computed {
        return Err(Error::Checksum { block: location, kind: kind.name(), stored, computed });
    }
    let claimed = le_u64(block, BLOCKNR_OFFSET);
    if claimed != location.0 {
        return Err(Error::BlockNumber { block: location, kind: kind.name(), claimed });
    }
    Ok(())
}

/// Which block type a block's checksum says it is, if any (how the tools identify blocks).
pub fn identify(block: &[u8]) -> Option<BlockKind> {
    let x = raw_crc(block) ^ le_u32(block, CSUM_OFFSET);
    BlockKind::ALL.into_iter().find(|k| k.salt() == x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_crc32c_vector() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn seal_then_verify_and_identify_every_kind() {
        for kind in BlockKind::ALL {
            let mut b = vec![0u8; META_BLOCK_SIZE];
            b[100] = 7;
            seal(&mut b, MetaBlock(42), kind);
            verify(&b, MetaBlock(42), kind).unwrap();
            assert_eq!(identify(&b), Some(kind));
            assert!(matches!(verify(&b, MetaBlock(43), kind), Err(Error::BlockNumber { .. })));
            b[200] ^= 1;
            assert!(matches!(verify(&b, MetaBlock(42), kind), Err(Error::Checksum { .. })));
        }
    }
}
