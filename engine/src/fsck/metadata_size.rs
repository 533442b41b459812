//! `thin_metadata_size`: the metadata-device size estimate (spec §8.4), its units and its
//! output, as thin-provisioning-tools 1.x computes and prints them.
//!
//! - 1.x: `min(1 + ceil(nr_data_blocks / 126) + max_thins, 4 161 600)` 4 KiB blocks
//!   (126: leaves assumed half full of 252 block_time entries).
//! - 0.9.0: `1 + floor(floor(2 · pool_sectors / block_sectors) / 252) + max_thins`, kept
//!   as [`estimate_blocks_v09`] for sizing test images the way the old tool would.
//!
//! Sizes are a number with an optional unit (`64k`, `1t`, `2097152` sectors when bare);
//! the data block size must be one dm-thin accepts (a multiple of 64 KiB up to 1 GiB)
//! and the pool at least one block. Output: the value in the `-u` unit, whole numbers
//! as integers, others with two decimals, then the unit's name (`-n`: the number only,
//! `-n=short`: the unit letter glued on, `-n=long`: the name glued on).

use super::error::{Error, Result};

/// Metadata block size in bytes.
const BLOCK_BYTES: u64 = 4096;
/// 0.9.0's "mappings per block": (node 4096 − header 64) / entry 16.
pub const MAPPINGS_PER_BLOCK_V09: u64 = (4096 - 64) / 16;
/// 1.x assumes leaves half full: 252 block_time entries / 2.
pub const ENTRIES_PER_LEAF_V1: u64 = 126;
/// Largest metadata device, in blocks (spec §1: 255 bitmaps × 16 320).
pub const MAX_METADATA_BLOCKS: u64 = 4_161_600;
/// Smallest data block dm-thin accepts (128 sectors); every size is a multiple of it.
pub const MIN_DATA_BLOCK_BYTES: u64 = 64 << 10;
/// Largest data block dm-thin accepts (2 097 152 sectors).
pub const MAX_DATA_BLOCK_BYTES: u64 = 1 << 30;

/// 0.9.0's estimate in 4 KiB blocks (wrapping like the C it mirrors).
pub fn estimate_blocks_v09(pool_sectors: u64, block_sectors: u64, max_thins: u64) -> u64 {
    let leaves = pool_sectors.wrapping_mul(2) / block_sectors.max(1) / MAPPINGS_PER_BLOCK_V09;
    1 + leaves.wrapping_add(max_thins)
}

/// 1.x's estimate in bytes for `nr_data_blocks` data blocks.
pub fn estimate_bytes_v1(nr_data_blocks: u64, max_thins: u64) -> u64 {
    let leaves = nr_data_blocks.div_ceil(ENTRIES_PER_LEAF_V1);
    let blocks = (1 + leaves).saturating_add(max_thins);
    blocks.min(MAX_METADATA_BLOCKS) * BLOCK_BYTES
}

/// A unit of size: (long name, letter, short symbol, bytes), in 1.x's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub name: &'static str,
    pub letter: &'static str,
    symbol: &'static str,
    pub bytes: u64,
}

/// Every unit; binary multiples take lower-case letters, decimal ones upper-case.
const UNITS: [Unit; 14] = [
    Unit { name: "byte", letter: "b", symbol: "b", bytes: 1 },
    Unit { name: "sector", letter: "s", symbol: "s", bytes: 512 },
    Unit { name: "kibibyte", letter: "k", symbol: "KiB", bytes: 1 << 10 },
    Unit { name: "mebibyte", letter: "m", symbol: "MiB", bytes: 1 << 20 },
    Unit { name: "gibibyte", letter: "g", symbol: "GiB", bytes: 1 << 30 },
    Unit { name: "tebibyte", letter: "t", symbol: "TiB", bytes: 1 << 40 },
    Unit { name: "pebibyte", letter: "p", symbol: "PiB", bytes: 1 << 50 },
    Unit { name: "exbibyte", letter: "e", symbol: "EiB", bytes: 1 << 60 },
    Unit { name: "kilobyte", letter: "K", symbol: "kB", bytes: 1_000 },
    Unit { name: "megabyte", letter: "M", symbol: "MB", bytes: 1_000_000 },
    Unit { name: "gigabyte", letter: "G", symbol: "GB", bytes: 1_000_000_000 },
    Unit { name: "terabyte", letter: "T", symbol: "TB", bytes: 1_000_000_000_000 },
    Unit { name: "petabyte", letter: "P", symbol: "PB", bytes: 1_000_000_000_000_000 },
    Unit { name: "exabyte", letter: "E", symbol: "EB", bytes: 1_000_000_000_000_000_000 },
];

/// The sector, `-u`'s default and the unit of a bare size.
pub const SECTOR: Unit = UNITS[1];

impl std::str::FromStr for Unit {
    type Err = Error;

    /// A unit by its name, letter or symbol (`sector`, `s`; `kibibyte`, `k`, `KiB`).
    fn from_str(s: &str) -> Result<Unit> {
        UNITS
            .iter()
            .find(|u| u.name == s || u.letter == s || u.symbol == s)
            .copied()
            .ok_or(Error::Usage { message: "Invalid unit specifier" })
    }
}

/// A size argument in bytes: digits and an optional unit (a bare number is in sectors).
pub fn parse_size(s: &str) -> Result<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| Error::Usage { message: "invalid size" })?;
    let unit = if unit.is_empty() { SECTOR } else { unit.parse()? };
    n.checked_mul(unit.bytes).ok_or(Error::Usage { message: "value out of bounds" })
}

/// How `-n` asked for the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `12345 sectors`
    #[default]
    Full,
    /// `-n`: `12345`
    NumericOnly,
    /// `-n=short`: `12345s`
    ShortUnits,
    /// `-n=long`: `12345sectors`
    LongUnits,
}

/// What to estimate and how to print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub block_bytes: u64,
    pub pool_bytes: u64,
    pub max_thins: u64,
    pub unit: Unit,
    pub format: Format,
}

impl Estimate {
    /// Refuses what 1.x refuses: block sizes dm-thin would not take, a pool smaller than
    /// one block.
    pub fn validate(&self) -> Result<()> {
        if self.block_bytes == 0 || !self.block_bytes.is_multiple_of(MIN_DATA_BLOCK_BYTES) {
            return Err(Error::Usage { message: "block size must be a multiple of 64 KiB" });
        }
        if self.block_bytes > MAX_DATA_BLOCK_BYTES {
            return Err(Error::Usage { message: "maximum block size is 1 GiB" });
        }
        if self.pool_bytes < self.block_bytes {
            return Err(Error::Usage { message: "pool size must be larger than block size" });
        }
        Ok(())
    }

    /// The estimate in bytes.
    pub fn bytes(&self) -> u64 {
        estimate_bytes_v1(self.pool_bytes / self.block_bytes.max(1), self.max_thins)
    }

    /// The line the tool prints (with its newline).
    pub fn render(&self) -> String {
        let size = self.bytes() as f64 / self.unit.bytes as f64;
        let mut out = if size < 1.0 || size.trunc() == size {
            format!("{size}")
        } else {
            format!("{size:.2}")
        };
        match self.format {
            Format::Full => out.push_str(&format!(" {}s", self.unit.name)),
            Format::NumericOnly => {}
            Format::ShortUnits => out.push_str(self.unit.letter),
            Format::LongUnits => out.push_str(&format!("{}s", self.unit.name)),
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(block: &str, pool: &str, max_thins: u64, unit: &str, format: Format) -> Estimate {
        Estimate {
            block_bytes: parse_size(block).expect("block"),
            pool_bytes: parse_size(pool).expect("pool"),
            max_thins,
            unit: unit.parse().expect("unit"),
            format,
        }
    }

    #[test]
    fn the_estimate_and_its_line_follow_1x() {
        // 1 TiB of 64 KiB blocks: 16 777 216 blocks, 133 153 leaves, + 1 + 100 roots.
        let e = est("64k", "1t", 100, "s", Format::Full);
        assert_eq!(e.bytes(), (1 + 133_153 + 100) * 4096);
        assert_eq!(e.render(), "1066032 sectors\n");
        assert_eq!(est("64k", "1t", 100, "sector", Format::NumericOnly).render(), "1066032\n");
        assert_eq!(est("64k", "1t", 100, "m", Format::Full).render(), "520.52 mebibytes\n");
        assert_eq!(est("64k", "1t", 100, "MiB", Format::ShortUnits).render(), "520.52m\n");
        assert_eq!(
            est("64k", "1t", 100, "g", Format::LongUnits).render(),
            "0.5083236694335938gibibytes\n"
        );
        // The cap: the largest metadata device.
        let huge = est("64k", "1000000t", 0, "b", Format::NumericOnly);
        assert_eq!(huge.render(), format!("{}\n", MAX_METADATA_BLOCKS * 4096));
    }

    #[test]
    fn sizes_are_sectors_unless_a_unit_says_otherwise() {
        assert_eq!(parse_size("128").expect("bare"), 128 * 512);
        assert_eq!(parse_size("64k").expect("k"), 64 << 10);
        assert_eq!(parse_size("2M").expect("M"), 2_000_000);
        assert_eq!(parse_size("1KiB").expect("KiB"), 1024);
        for bad in ["", "k", "12q", "-1", "99999999999999999999", "20000000000000000000e"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_block_sizes_dm_thin_accepts_pass() {
        for ok in ["128", "64k", "256", "1m", "2097152", "1g"] {
            assert!(est(ok, "1t", 1, "s", Format::Full).validate().is_ok(), "{ok}");
        }
        for bad in ["0", "64", "127", "129", "100k", "2097280", "2g"] {
            assert!(est(bad, "1t", 1, "s", Format::Full).validate().is_err(), "{bad}");
        }
        assert!(est("1m", "512k", 1, "s", Format::Full).validate().is_err(), "pool < block");
    }
}
