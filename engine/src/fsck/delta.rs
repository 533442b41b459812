//! thin_delta as library code: the differences between two devices' mappings, printed
//! as 0.9.0 prints them (`<same>`, `<different>`, `<left_only>`, `<right_only>`, plain or
//! `--verbose` with the data blocks of each range).
//!
//! The walk is `btree::diff`, the same tree diff the pool's changed-block queries use
//! (there it skips shared subtrees; here it walks them, since `<same>` ranges are printed).
//! Memory: the coalesced segments.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use std::ops::ControlFlow;

use super::dump::{read_top_level, reader, select_roots};
use super::error::{Error, Result};
use crate::block_manager::ReadBlocks;
use crate::btree::{self, DiffItem, Shared};
use crate::format::le_u64;
use crate::format::thin::BlockTime;
use crate::io::BlockDevice;
use crate::thin::BOTTOM;
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

/// Appends one virtual block's verdict, coalescing with the last segment when it continues
/// it (same kind, next block, next data block on each mapped side).
fn push(out: &mut Vec<Segment>, kind: Kind, begin: u64, l: Option<u64>, r: Option<u64>) {
    if let Some(last) = out.last_mut() {
        let contiguous = last.kind == kind && last.begin.checked_add(last.len) == Some(begin);
        let data_ok = last.left_data.and_then(|d| d.checked_add(last.len)) == l
            && last.right_data.and_then(|d| d.checked_add(last.len)) == r;
        if contiguous && data_ok {
            last.len += 1;
            return;
        }
    }
    out.push(Segment { kind, begin, len: 1, left_data: l, right_data: r });
}

/// The segments of the two mapping trees in virtual-block order: `btree::diff`, walking
/// shared subtrees too (thin_delta reports identical ranges as `<same>`).
pub fn segments<R: ReadBlocks + ?Sized>(
    r: &mut R,
    left: MetaBlock,
    right: MetaBlock,
) -> Result<Vec<Segment>> {
    let mut out: Vec<Segment> = Vec::new();
    let block = |v: &[u8]| BlockTime::unpack(le_u64(v, 0)).block;
    let visit = &mut |item: DiffItem| {
        match item {
            DiffItem::LeftOnly { key, value } => {
                push(&mut out, Kind::LeftOnly, key, Some(block(value)), None)
            }
            DiffItem::RightOnly { key, value } => {
                push(&mut out, Kind::RightOnly, key, None, Some(block(value)))
            }
            DiffItem::Both { key, left, right } => {
                let (a, b) = (block(left), block(right));
                let kind = if a == b { Kind::Same } else { Kind::Different };
                push(&mut out, kind, key, Some(a), Some(b))
            }
            // Shared::Walk reports no shared subtree.
            DiffItem::Shared { .. } => {}
        }
        Ok(ControlFlow::Continue(()))
    };
    let _all = btree::diff(r, left, right, BOTTOM, 0, u64::MAX, Shared::Walk, visit)?;
    Ok(out)
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
    let segs = segments(&mut bm, r1, r2)?;
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
