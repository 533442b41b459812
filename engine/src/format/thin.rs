//! Values of the thin trees (spec §4.5): block_time and device details.

use super::{le_u32, le_u64, put_u32, put_u64};

/// A bottom-level mapping value: data block (40 bits) and the time it was written (24 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockTime {
    pub block: u64,
    pub time: u32,
}

impl BlockTime {
    pub fn pack(self) -> u64 {
        debug_assert!(self.block < 1 << 40 && self.time < 1 << 24);
        (self.block << 24) | (self.time as u64 & 0xFF_FFFF)
    }

    pub fn unpack(v: u64) -> Self {
        BlockTime { block: v >> 24, time: (v & 0xFF_FFFF) as u32 }
    }
}

pub const DEVICE_DETAILS_SIZE: usize = 24;

/// Per-device details (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceDetails {
    pub mapped_blocks: u64,
    pub transaction_id: u64,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    pub fn decode(b: &[u8]) -> Self {
        DeviceDetails {
            mapped_blocks: le_u64(b, 0),
            transaction_id: le_u64(b, 8),
            creation_time: le_u32(b, 16),
            snapshotted_time: le_u32(b, 20),
        }
    }

    pub fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.mapped_blocks);
        put_u64(b, 8, self.transaction_id);
        put_u32(b, 16, self.creation_time);
        put_u32(b, 20, self.snapshotted_time);
    }

    pub fn to_bytes(self) -> [u8; DEVICE_DETAILS_SIZE] {
        let mut b = [0u8; DEVICE_DETAILS_SIZE];
        self.encode(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_time_packing_matches_the_spec_examples() {
        assert_eq!(BlockTime { block: 1, time: 0 }.pack().to_le_bytes(), [0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(BlockTime { block: 17026, time: 2 }.pack(), 0x0000_0042_8200_0002);
        let bt = BlockTime { block: (1 << 40) - 1, time: (1 << 24) - 1 };
        assert_eq!(BlockTime::unpack(bt.pack()), bt);
    }

    #[test]
    fn device_details_round_trip() {
        let d = DeviceDetails {
            mapped_blocks: 300,
            transaction_id: 5,
            creation_time: 1,
            snapshotted_time: 2,
        };
        assert_eq!(DeviceDetails::decode(&d.to_bytes()), d);
    }
}
