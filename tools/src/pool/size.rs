//! Sizes on the command line: a number of bytes with an optional K, M, G or T suffix
//! (powers of 1024; `KiB`, `MB` … spellings accepted, all binary).

/// Parses "10G", "512M", "4096", "1.5T" into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        other => return Err(format!("unknown size unit {other:?} in {s:?} (use K, M, G, T)")),
    };
    if num.is_empty() {
        return Err(format!("{s:?} is not a size"));
    }
    let bytes = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
        let b = f * (1u64 << shift) as f64;
        if !(b.is_finite() && b >= 0.0 && b < u64::MAX as f64) {
            return Err(format!("{s:?} is too large"));
        }
        b as u64
    } else {
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
        n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))?
    };
    Ok(bytes)
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
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(10 << 30), "10GiB");
        assert_eq!(format_size(1536 << 20), "1.50GiB");
        assert_eq!(format_size(512), "512B");
        assert_eq!(format_size(0), "0B");
        assert_eq!(parse_size(&format_size(64 << 10)), Ok(64 << 10), "it reads back");
    }
}
