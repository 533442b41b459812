//! `thinly list` and the volume table of `thinly status`, as `lvs` reports a thin pool: a
//! row for the pool (its Data% and Meta%) and one per volume (virtual size, Data% of it
//! mapped, mapped / exclusive / shared bytes, origin).
//!
//! Columns (`-o FIELD,...`, lvs's names where lvs has the field; `-o +FIELD` adds to the
//! default columns):
//!
//! | field | heading | what |
//! |---|---|---|
//! | `lv_name` | LV | volume name; `[pool]` for the pool's row |
//! | `thin_id` | ThId | thin device id |
//! | `lv_size` | LSize | virtual size (the pool's row: its data size) |
//! | `data_percent` | Data% | mapped / virtual size (the pool's row: used / total data blocks) |
//! | `metadata_percent` | Meta% | the pool's row: used / total metadata blocks |
//! | `mapped` | Mapped | mapped bytes (the pool's row: used data) |
//! | `exclusive` | Excl | bytes only this volume maps (thin_ls's EXCLUSIVE) |
//! | `shared` | Shared | mapped bytes another volume shares |
//! | `origin` | Origin | the volume a snapshot was taken of; `(deleted)` once it is gone |
//! | `lv_permissions` | Perm | `rw` or `r` |
//!
//! Units (`--units`, as lvs): `h` (default) thinly's one human format (`1.50GiB`); `b`, `s`,
//! `k`, `m`, `g`, `t` powers of 1024 (lower case) or of 1000 (upper case), printed with two
//! decimals and the unit letter (`10.00g`); `--bytes` prints whole bytes without a suffix.
//! `--json` prints the objects with the chosen fields (sizes in bytes, percentages as
//! numbers); without `-o` it prints the full volume objects (the control socket's `list`).

use super::size::format_size;
use serde_json::{json, Map, Value};

/// Every field, in the default order, with its heading.
pub const FIELDS: [(&str, &str); 10] = [
    ("lv_name", "LV"),
    ("thin_id", "ThId"),
    ("lv_size", "LSize"),
    ("data_percent", "Data%"),
    ("metadata_percent", "Meta%"),
    ("mapped", "Mapped"),
    ("exclusive", "Excl"),
    ("shared", "Shared"),
    ("origin", "Origin"),
    ("lv_permissions", "Perm"),
];

/// The fields shown without `-o`.
const DEFAULT_FIELDS: &str =
    "lv_name,thin_id,lv_size,data_percent,metadata_percent,mapped,exclusive,shared,origin";

/// How sizes print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Units {
    Human,
    /// Bytes per unit and its letter.
    Fixed(u64, char),
    /// Whole bytes, no suffix.
    Bytes,
}

/// `--units` (lvs's letters).
pub fn parse_units(s: &str) -> Result<Units, String> {
    let mut chars = s.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return Err(format!("units {s:?}: one of h, b, s, k, m, g, t (upper case: SI)"));
    };
    let base: u64 = if c.is_ascii_uppercase() { 1000 } else { 1024 };
    let per = match c.to_ascii_lowercase() {
        'h' => return Ok(Units::Human),
        'b' => 1,
        's' => 512,
        'k' => base,
        'm' => base.pow(2),
        'g' => base.pow(3),
        't' => base.pow(4),
        _ => return Err(format!("units {s:?}: one of h, b, s, k, m, g, t (upper case: SI)")),
    };
    Ok(Units::Fixed(per, c))
}

/// `-o`: the chosen field names, checked; `+F,...` adds to the defaults.
pub fn parse_fields(spec: Option<&str>) -> Result<Vec<&'static str>, String> {
    let spec = spec.unwrap_or(DEFAULT_FIELDS);
    let (mut out, spec) = match spec.strip_prefix('+') {
        Some(rest) => (parse_fields(None)?, rest),
        None => (Vec::new(), spec),
    };
    for f in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let known =
            FIELDS.iter().find(|(n, h)| n.eq_ignore_ascii_case(f) || h.eq_ignore_ascii_case(f));
        match known {
            Some((n, _)) => out.push(*n),
            None => {
                let names: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                return Err(format!("unknown field {f:?}; fields: {}", names.join(", ")));
            }
        }
    }
    if out.is_empty() {
        return Err("no fields chosen".into());
    }
    Ok(out)
}

fn size_text(b: Option<u64>, units: Units) -> String {
    let Some(b) = b else { return String::new() };
    match units {
        Units::Human => format_size(b),
        Units::Bytes => b.to_string(),
        Units::Fixed(per, c) => format!("{:.2}{c}", b as f64 / per as f64),
    }
}

fn percent(part: Option<u64>, whole: Option<u64>) -> Option<f64> {
    let (p, w) = (part?, whole?);
    (w > 0).then(|| (p as f64 * 100.0 / w as f64 * 100.0).round() / 100.0)
}

/// One row's values as JSON (sizes in bytes, percentages as numbers; absent: null).
fn volume_row(v: &Value) -> Map<String, Value> {
    let n = |k: &str| v[k].as_u64();
    let origin = match (v["snapshot_of"].as_str(), v["origin_deleted"].as_bool()) {
        (_, Some(true)) => json!("(deleted)"),
        (Some(o), _) => json!(o),
        _ => Value::Null,
    };
    let mut m = Map::new();
    m.insert("lv_name".into(), v["name"].clone());
    m.insert("thin_id".into(), v["dev_id"].clone());
    m.insert("lv_size".into(), v["size_bytes"].clone());
    m.insert("data_percent".into(), json!(percent(n("mapped_bytes"), n("size_bytes"))));
    m.insert("metadata_percent".into(), Value::Null);
    m.insert("mapped".into(), v["mapped_bytes"].clone());
    m.insert("exclusive".into(), v["exclusive_bytes"].clone());
    m.insert("shared".into(), v["shared_bytes"].clone());
    m.insert("origin".into(), origin);
    let perm = v["read_only"].as_bool().map(|ro| if ro { "r" } else { "rw" });
    m.insert("lv_permissions".into(), json!(perm));
    m
}

/// The pool's row, from a `status` result's `pool` object.
fn pool_row(p: &Value) -> Map<String, Value> {
    let n = |k: &str| p[k].as_u64();
    let bs = n("data_block_size_bytes");
    let bytes = |k: &str| n(k).zip(bs).map(|(b, s)| b.saturating_mul(s));
    let mut m = Map::new();
    m.insert("lv_name".into(), json!("[pool]"));
    m.insert("lv_size".into(), json!(bytes("total_data_blocks")));
    m.insert("data_percent".into(), json!(percent(n("used_data_blocks"), n("total_data_blocks"))));
    let meta = percent(n("used_metadata_blocks"), n("total_metadata_blocks"));
    m.insert("metadata_percent".into(), json!(meta));
    m.insert("mapped".into(), json!(bytes("used_data_blocks")));
    m
}

/// The rows of a `status` result (`{"pool", "volumes"}`): the pool's first.
pub fn rows(status: &Value) -> Vec<Map<String, Value>> {
    let vols = status["volumes"].as_array().map(Vec::as_slice).unwrap_or_default();
    std::iter::once(pool_row(&status["pool"])).chain(vols.iter().map(volume_row)).collect()
}

/// The chosen fields of each row as JSON objects (the volumes only: the pool's figures are
/// in `thinly status --json`).
pub fn json_rows(status: &Value, fields: &[&str]) -> Value {
    let rows = rows(status).into_iter().skip(1);
    let pick = |r: Map<String, Value>| {
        let m: Map<String, Value> = fields
            .iter()
            .map(|f| (f.to_string(), r.get(*f).cloned().unwrap_or_default()))
            .collect();
        Value::Object(m)
    };
    Value::Array(rows.map(pick).collect())
}

fn cell(field: &str, v: &Value, units: Units) -> String {
    match field {
        "lv_size" | "mapped" | "exclusive" | "shared" => size_text(v.as_u64(), units),
        "data_percent" | "metadata_percent" => {
            v.as_f64().map_or(String::new(), |p| format!("{p:.2}"))
        }
        _ => match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        },
    }
}

/// The table: headings, then the pool's row and the volumes'.
pub fn table(status: &Value, fields: &[&str], units: Units) -> String {
    let heading = |f: &str| FIELDS.iter().find(|(n, _)| *n == f).map_or(f, |(_, h)| *h).to_string();
    let mut grid: Vec<Vec<String>> = vec![fields.iter().map(|f| heading(f)).collect()];
    for r in rows(status) {
        grid.push(
            fields.iter().map(|f| cell(f, r.get(*f).unwrap_or(&Value::Null), units)).collect(),
        );
    }
    let widths: Vec<usize> =
        (0..fields.len()).map(|i| grid.iter().map(|row| row[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in grid {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| match fields[i] {
                // Names and origins read left-aligned, figures right-aligned (as lvs).
                "lv_name" | "origin" | "lv_permissions" => format!("{c:<w$}", w = widths[i]),
                _ => format!("{c:>w$}", w = widths[i]),
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Value {
        json!({"pool": {"used_data_blocks": 4, "total_data_blocks": 16, "data_block_size_bytes": 65536,
                        "used_metadata_blocks": 10, "total_metadata_blocks": 1000},
               "volumes": [
                 {"name": "a", "dev_id": 1, "size_bytes": 1u64 << 20, "read_only": false,
                  "mapped_bytes": 262144, "exclusive_bytes": 65536, "shared_bytes": 196608,
                  "snapshot_of": null, "origin_deleted": false},
                 {"name": "s", "dev_id": 2, "size_bytes": 1u64 << 20, "read_only": true,
                  "mapped_bytes": 196608, "exclusive_bytes": 0, "shared_bytes": 196608,
                  "snapshot_of": null, "origin_deleted": true}]})
    }

    #[test]
    fn the_pool_row_has_data_and_meta_percent_and_volumes_their_usage() {
        let fields = parse_fields(None).unwrap();
        let t = table(&status(), &fields, Units::Human);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("LV") && lines[0].contains("Data%"), "{t}");
        assert!(
            lines[1].contains("[pool]") && lines[1].contains("25.00") && lines[1].contains("1.00"),
            "{t}"
        );
        assert!(
            lines[2].contains("256KiB") && lines[2].contains("64KiB") && lines[2].contains("25.00"),
            "{t}"
        );
        assert!(t.contains("(deleted)"), "{t}");
    }

    #[test]
    fn fields_units_and_bytes_follow_lvs() {
        let fields = parse_fields(Some("lv_name,lv_size,exclusive")).unwrap();
        assert_eq!(fields, ["lv_name", "lv_size", "exclusive"]);
        let t = table(&status(), &fields, parse_units("k").unwrap());
        assert!(t.contains("1024.00k") && t.contains("64.00k"), "{t}");
        let t = table(&status(), &fields, parse_units("K").unwrap());
        assert!(t.contains("1048.58K"), "{t}");
        let t = table(&status(), &fields, Units::Bytes);
        assert!(t.contains("1048576") && t.contains("65536"), "{t}");
        assert_eq!(parse_fields(Some("+lv_permissions")).unwrap().last(), Some(&"lv_permissions"));
        assert!(parse_fields(Some("lv_name,nope")).is_err());
        assert!(parse_units("x").is_err());
        let j = json_rows(&status(), &["lv_name", "origin", "data_percent"]);
        assert_eq!(
            j,
            json!([{"lv_name": "a", "origin": null, "data_percent": 25.0},
                             {"lv_name": "s", "origin": "(deleted)", "data_percent": 18.75}])
        );
    }
}
