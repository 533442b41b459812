//! thin_delta as library code: the differences between two devices' mappings, printed
//! as 0.9.0 prints them (`<same>`, `<different>`, `<left_only>`, `<right_only>`, plain or
//! `--verbose` with the data blocks of each range).
//!
//! Memory: both devices' mappings as coalesced runs (a run per contiguous extent).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use super::dump::{read_top_level, reader, select_roots, walk_mappings};
use super::error::{Error, Result};
use super::ir::Run;
use crate::block_manager::BlockManager;
use crate::io::BlockDevice;
use crate::units::MetaBlock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Same,
    Different,
    LeftOnly,
    RightOnly,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Same => "same",
            Kind::Different => "different",
            Kind::LeftOnly => "left_only",
            Kind::RightOnly => "right_only",
        }
    }
}

/// `len` virtual blocks from `begin` that differ in the same way; data begins where
/// mapped on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: Kind,
    pub begin: u64,
    pub len: u64,
    pub left_data: Option<u64>,
    pub right_data: Option<u64>,
}

fn runs_of(bm: &mut BlockManager, root: MetaBlock) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    walk_mappings(bm, root, &mut |k, bt| {
        let next = Run { origin_begin: k, data_begin: bt.block, len: 1, time: bt.time };
        match runs.last_mut() {
            Some(cur) if cur.origin_end() == k && cur.data_end() == bt.block => cur.len += 1,
            _ => runs.push(next),
        }
        Ok(())
    })?;
    Ok(runs)
}

/// The segments in virtual-block order.
pub fn diff(left: &[Run], right: &[Run]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut li, mut rj) = (0u64, 0u64); // offsets consumed within left[i], right[j]
    let mut push = |kind, begin, len, l: Option<u64>, r: Option<u64>| {
        if let Some(last) = out.last_mut() {
            let contiguous = last.kind == kind && last.begin.checked_add(last.len) == Some(begin);
            let data_ok = last.left_data.and_then(|d| d.checked_add(last.len)) == l
                && last.right_data.and_then(|d| d.checked_add(last.len)) == r;
            if contiguous && data_ok {
                last.len += len;
                return;
            }
        }
        out.push(Segment { kind, begin, len, left_data: l, right_data: r });
    };
    while i < left.len() || j < right.len() {
        let a = left.get(i).map(|r| (r.origin_begin + li, r.len - li, r.data_begin + li));
        let b = right.get(j).map(|r| (r.origin_begin + rj, r.len - rj, r.data_begin + rj));
        let (take_l, take_r, len, kind) = match (a, b) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                let len = a.1.min(b.1);
                (true, true, len, if a.2 == b.2 { Kind::Same } else { Kind::Different })
            }
            (Some(a), Some(b)) if a.0 < b.0 => (true, false, a.1.min(b.0 - a.0), Kind::LeftOnly),
            (Some(_), Some(b)) => {
                (false, true, b.1.min(a.map_or(u64::MAX, |a| a.0) - b.0), Kind::RightOnly)
            }
            (Some(a), None) => (true, false, a.1, Kind::LeftOnly),
            (None, Some(b)) => (false, true, b.1, Kind::RightOnly),
            (None, None) => break,
        };
        let begin = if take_l { a.map_or(0, |a| a.0) } else { b.map_or(0, |b| b.0) };
        push(
            kind,
            begin,
            len,
            take_l.then(|| a.map_or(0, |a| a.2)),
            take_r.then(|| b.map_or(0, |b| b.2)),
        );
        if take_l {
            li += len;
            if li == left[i].len {
                i += 1;
                li = 0;
            }
        }
        if take_r {
            rj += len;
            if rj == right[j].len {
                j += 1;
                rj = 0;
            }
        }
    }
    out
}

/// One side of a delta: a device by id (`--snap1`/`--thin1`), or a bottom-level tree by
/// its root block (1.x's `--root1`), printed as `left_root="…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    DevId(u64),
    Root(u64),
}

impl Side {
    fn attr(self, which: &str) -> String {
        match self {
            Side::DevId(id) => format!("{which}=\"{id}\""),
            Side::Root(b) => format!("{which}_root=\"{b}\""),
        }
    }
}

/// Writes thin_delta's XML for the two sides.
pub fn delta<W: Write>(
    dev: Arc<dyn BlockDevice>,
    metadata_snap: Option<Option<u64>>,
    snap1: Side,
    snap2: Side,
    verbose: bool,
    out: &mut W,
) -> Result<()> {
    let mut bm = reader(dev);
    let roots = select_roots(&mut bm, metadata_snap)?;
    let tops = read_top_level(&mut bm, roots.mapping_root)?;
    let find = |side: Side, which: &str| match side {
        Side::Root(b) if b < bm.nr_blocks() => Ok(MetaBlock(b)),
        Side::Root(b) => Err(Error::Unusable(format!("{which} root {b} is past the metadata"))),
        Side::DevId(id) => tops.get(&id).copied().ok_or_else(|| {
            Error::Unusable(format!("Unable to find mapping tree for {which} ({id})"))
        }),
    };
    let (r1, r2) = (find(snap1, "snap1")?, find(snap2, "snap2")?);
    let left = runs_of(&mut bm, r1)?;
    let right = runs_of(&mut bm, r2)?;
    let segs = diff(&left, &right);
    let sb = &roots.ir;
    let mut s = String::new();
    let _ = write!(
        s,
        "<superblock uuid=\"\" time=\"{}\" transaction=\"{}\" data_block_size=\"{}\" nr_data_blocks=\"{}\"",
        sb.time, sb.transaction, sb.data_block_size, sb.nr_data_blocks
    );
    // 0.9.0 names a held metadata snapshot here (thin_dump does not).
    let held = Some(roots.sb.held_root.0).filter(|&h| h != 0 && metadata_snap.is_none());
    if let Some(h) = held {
        let _ = write!(s, " metadata_snap=\"{h}\"");
    }
    let _ = writeln!(s, ">\n  <diff {} {}>", snap1.attr("left"), snap2.attr("right"));
    if verbose {
        render_verbose(&segs, &mut s);
    } else {
        render_plain(&segs, &mut s);
    }
    s.push_str("  </diff>\n</superblock>\n");
    out.write_all(s.as_bytes()).map_err(Error::io("writing the delta"))?;
    out.flush().map_err(Error::io("writing the delta"))
}

fn render_plain(segs: &[Segment], s: &mut String) {
    let mut i = 0;
    while i < segs.len() {
        let (kind, begin) = (segs[i].kind, segs[i].begin);
        let mut end = begin.saturating_add(segs[i].len);
        i += 1;
        while i < segs.len() && segs[i].kind == kind && segs[i].begin == end {
            end = end.saturating_add(segs[i].len);
            i += 1;
        }
        let _ = writeln!(s, "    <{} begin=\"{begin}\" length=\"{}\"/>", kind.tag(), end - begin);
    }
}

fn render_verbose(segs: &[Segment], s: &mut String) {
    let mut i = 0;
    while i < segs.len() {
        let kind = segs[i].kind;
        let _ = writeln!(s, "    <{}>", kind.tag());
        while i < segs.len() && segs[i].kind == kind {
            let g = &segs[i];
            let data = match (g.left_data, g.right_data, kind) {
                (Some(l), Some(r), Kind::Different) => {
                    format!("left_data_begin=\"{l}\" right_data_begin=\"{r}\"")
                }
                (Some(d), _, _) | (None, Some(d), _) => format!("data_begin=\"{d}\""),
                (None, None, _) => String::new(),
            };
            let _ = writeln!(s, "      <range begin=\"{}\" {data} length=\"{}\"/>", g.begin, g.len);
            i += 1;
        }
        let _ = writeln!(s, "    </{}>", kind.tag());
    }
}
