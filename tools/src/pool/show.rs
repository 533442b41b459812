//! What the pool commands print for people: labelled status and one
//! line saying what a management command did. Every size goes through
//! [`size::format_size`](super::size::format_size), the one size format of thinly's own
//! output. Scripts read `--json` (or, for the kernel's thin-pool status line, `--raw`);
//! these texts are free to change.
//!
//! The inputs are the JSON results of `control::execute`; a field that is missing (an older
//! server) prints as `?`, never a panic.

use super::size::format_size;
use serde_json::Value;

/// `thinly status` / `thinly pool status`: the kernel's thin-pool status fields, labelled
/// (a `Request::Status` result).
pub fn status_text(v: &Value) -> String {
    let p = &v["pool"];
    let n = |k: &str| p[k].as_u64();
    let bs = n("data_block_size_bytes");
    let used_bytes = n("used_data_blocks").zip(bs).map(|(u, b)| u.saturating_mul(b));
    let total_bytes = n("total_data_blocks").zip(bs).map(|(t, b)| t.saturating_mul(b));
    let mut mode = p["mode"].as_str().unwrap_or("?").to_string();
    if let Some(reason) = p["read_only_reason"].as_str() {
        mode = format!("{mode} ({reason})");
    }
    let rows = [
        ("transaction id", opt(n("transaction_id"))),
        (
            "data",
            format!(
                "{} of {} blocks used ({} of {}, {} blocks)",
                opt(n("used_data_blocks")),
                opt(n("total_data_blocks")),
                bytes(used_bytes),
                bytes(total_bytes),
                bytes(bs),
            ),
        ),
        (
            "metadata",
            format!(
                "{} of {} blocks used ({} blocks)",
                opt(n("used_metadata_blocks")),
                opt(n("total_metadata_blocks")),
                format_size(thinly_engine::limits::META_BLOCK_SIZE as u64),
            ),
        ),
        ("Data%", pct(n("used_data_blocks"), n("total_data_blocks"))),
        ("Meta%", pct(n("used_metadata_blocks"), n("total_metadata_blocks"))),
        ("held metadata root", p["held_metadata_root"].as_u64().map_or("none".into(), str_of)),
        ("mode", mode),
        ("when data is full", p["out_of_space_policy"].as_str().unwrap_or("?").to_string()),
        ("low water mark", format!("{} data blocks", opt(n("low_water_mark_blocks")))),
        ("needs check", yes_no(p["needs_check"].as_bool())),
        ("discard passdown", yes_no(p["discard_passdown"].as_bool())),
        ("data I/O", p["data_io"].as_str().unwrap_or("?").to_string()),
    ];
    let mut out = String::from("pool\n");
    for (label, value) in rows {
        out.push_str(&format!("  {label:<20}{value}\n"));
    }
    out.trim_end().to_string()
}

/// One line about a volume a command made or changed: `created volume scratch: 100GiB,
/// device 2, read-write`.
pub fn volume_line(what: &str, v: &Value) -> String {
    let mut line = format!(
        "{what} {}: {}, device {}, {}",
        v["name"].as_str().unwrap_or("?"),
        bytes(v["size_bytes"].as_u64()),
        opt(v["dev_id"].as_u64()),
        if v["read_only"].as_bool() == Some(true) { "read-only" } else { "read-write" }
    );
    if let Some(origin) = v["snapshot_of"].as_str() {
        line.push_str(&format!(", snapshot of {origin}"));
    }
    line
}

/// `thinly message`: the reply of the kernel's message, and for `create_thin`/`create_snap`
/// the export the new device became (the kernel has no names: the pool names it `thin<ID>`
/// and gives it a size), found in `volumes` (the volume list after the message).
pub fn message_text(text: &str, reply: &str, volumes: Option<&Value>) -> String {
    let verb = text.split_whitespace().next().unwrap_or("");
    if !matches!(verb, "create_thin" | "create_snap") {
        return reply.to_string();
    }
    let found = volumes
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["name"].as_str() == Some(reply)));
    let Some(v) = found else {
        return format!("{text}: added the export {reply}");
    };
    format!(
        "{text}: added the export {reply} ({}, device {}; `thinly resize {reply} --size SIZE` \
         changes its size)",
        bytes(v["size_bytes"].as_u64()),
        opt(v["dev_id"].as_u64()),
    )
}

/// A percentage as lvs prints it (`12.34`).
fn pct(part: Option<u64>, whole: Option<u64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => format!("{:.2}", p as f64 * 100.0 / w as f64),
        _ => "?".into(),
    }
}

fn bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "?".into(), format_size)
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "?".into(), str_of)
}

fn str_of(n: u64) -> String {
    n.to_string()
}

fn yes_no(b: Option<bool>) -> String {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume() -> Value {
        json!({"name": "thin7", "dev_id": 7, "size_bytes": 16u64 << 30, "read_only": false,
               "mapped_sectors": 2048, "snapshot_of": null})
    }

    #[test]
    fn status_labels_every_kernel_field_and_sizes_in_one_format() {
        let v = json!({"pool": {"transaction_id": 3, "used_metadata_blocks": 12,
            "total_metadata_blocks": 4096, "used_data_blocks": 3751, "total_data_blocks": 262144,
            "held_metadata_root": null, "mode": "rw", "read_only_reason": null,
            "discard_passdown": true, "out_of_space_policy": "queue_if_no_space",
            "needs_check": false, "metadata_low_watermark": 10, "data_block_size_bytes": 65536,
            "low_water_mark_blocks": 0, "data_io": "io_uring"}, "volumes": [volume()]});
        let t = status_text(&v);
        assert!(t.contains("transaction id      3\n"), "{t}");
        assert!(t.contains("3751 of 262144 blocks used (234.44MiB of 16GiB, 64KiB blocks)"), "{t}");
        assert!(t.contains("held metadata root  none"), "{t}");
        assert!(!t.contains('?'), "{t}");
    }

    #[test]
    fn a_missing_field_prints_a_question_mark_not_a_panic() {
        let t = status_text(&json!({}));
        assert!(t.contains("transaction id      ?"), "{t}");
    }

    #[test]
    fn create_thin_says_which_export_it_added_and_its_size() {
        let vols = json!([volume()]);
        let t = message_text("create_thin 7", "thin7", Some(&vols));
        assert!(t.contains("added the export thin7 (16GiB, device 7"), "{t}");
        assert_eq!(message_text("reserve_metadata_snap", "42", None), "42");
        let line = volume_line("created volume", &volume());
        assert_eq!(line, "created volume thin7: 16GiB, device 7, read-write");
    }
}
