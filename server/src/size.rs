//! Sizes on thinly's command line: the one parser every thinly flag that takes a size uses
//! (`--size`, `--block-size`, `--metadata-size`, `--auto-extend-max`, …). A size is a
//! number with an optional unit: none or `B` for bytes, `s` for 512-byte sectors (as dmsetup
//! tables and Docker's devicemapper options give them), `K`, `M`, `G`, `T`, `P` for powers of
//! 1024 (`KiB`, `MB` … spellings accepted, all binary). A decimal point is allowed when the
//! result is a whole number of bytes (`1.5T`, `0.5K`; not `0.3K`).
//!
//! `thin_metadata_size` keeps thin-provisioning-tools 1.x's own parser (bare numbers are
//! sectors there, `K` is 1000): its options are that tool's contract.

/// Bytes in a sector, the unit of dm tables.
const SECTOR_BYTES: u64 = 512;

/// The bytes one unit stands for, by its (case-insensitive) spelling.
fn unit_bytes(unit: &str) -> Option<u64> {
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "S" | "SECTOR" | "SECTORS" => return Some(SECTOR_BYTES),
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// Parses "10G", "512M", "4096", "128s", "1.5T" into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let Some(per_unit) = unit_bytes(unit.trim()) else {
        return Err(format!("unknown size unit {:?} in {s:?} (use s, K, M, G, T)", unit.trim()));
    };
    if num.is_empty() {
        return Err(format!("{s:?} is not a size"));
    }
    if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
        let b = f * per_unit as f64;
        if !(b.is_finite() && b >= 0.0 && b < u64::MAX as f64) {
            return Err(format!("{s:?} is too large"));
        }
        if b.fract() != 0.0 {
            return Err(format!("{s:?} is not a whole number of bytes"));
        }
        return Ok(b as u64);
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(per_unit).ok_or_else(|| format!("{s:?} is too large"))
}

/// Bytes for people: the one size format of `thinly`'s own output (status, tables, what a
/// command did). Binary units with IEC names, no space: an exact multiple without decimals
/// (`10GiB`), anything else with two (`234.44MiB`), under 1 KiB in bytes (`512B`). The
/// thin_* tools keep the formats of the tools they replace (`thin_ls`: `234MiB`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift {
            if bytes.is_multiple_of(1 << shift) {
                return format!("{}{unit}", bytes >> shift);
            }
            return format!("{:.2}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("2P"), Ok(2 << 50));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(10 << 30), "10GiB");
        assert_eq!(format_size(1536 << 20), "1.50GiB");
        assert_eq!(format_size(512), "512B");
        assert_eq!(format_size(0), "0B");
        assert_eq!(parse_size(&format_size(64 << 10)), Ok(64 << 10), "it reads back");
    }

    #[test]
    fn sizes_take_sectors_as_dmsetup_and_docker_write_them() {
        assert_eq!(parse_size("128s"), Ok(128 * 512));
        assert_eq!(parse_size("128S"), Ok(128 * 512));
        assert_eq!(parse_size("20971520s"), Ok(10 << 30));
        assert_eq!(parse_size("1 sector"), Ok(512));
        assert_eq!(parse_size("8 sectors"), Ok(4096));
        assert_eq!(parse_size("0s"), Ok(0));
        assert_eq!(parse_size("1.5s"), Ok(768));
        assert_eq!(parse_size(&format!("{}s", u64::MAX / 512)), Ok(u64::MAX / 512 * 512));
        assert!(parse_size(&format!("{}s", u64::MAX / 512 + 1)).is_err());
    }

    #[test]
    fn malformed_sizes_are_refused_not_guessed() {
        for bad in ["s", "K", "1.2.3K", "-1", "1e3", "12 34", "0.3K", "1.0001s", "1KK", "K1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed as {:?}", parse_size(bad));
        }
        assert_eq!(parse_size(" 64K "), Ok(64 << 10));
        assert_eq!(parse_size("0.5K"), Ok(512));
    }
}
