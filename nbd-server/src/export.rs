//! The storage seam: what the server needs from a volume (`Export`) and how it finds
//! volumes by name (`ExportRegistry`). The pool's volume handle implements `Export` in
//! another crate; `MemExport` implements it in memory for tests and the example.
//!
//! Contract for implementers:
//! - The server has already checked every range against `size_bytes()` and the
//!   read-only flag; implementations may still refuse with `InvalidInput`/`EINVAL`.
//! - Offsets and lengths are multiples of `min_block_size()` when the client promised
//!   to obey it (GO with `NBD_INFO_BLOCK_SIZE`); otherwise they may be unaligned, and
//!   the export must either read-modify-write or fail with `EINVAL` — never corrupt.
//! - Methods may be called concurrently from several threads and connections.
//!   Overlapping writes in flight together may land in either order (§9.1).
//! - Errors: return `io::Error` carrying a raw errno where possible (`ENOSPC`, `EPERM`,
//!   `EINVAL`, `EIO`, `ENOTSUP`); `NbdErrno::from_io_error` maps them to the wire.

use std::io;
use std::sync::{Arc, RwLock};

pub use crate::proto::consts::{STATE_DIRTY, STATE_HOLE, STATE_ZERO};

/// One run of `base:allocation` status: `length` bytes with `flags`
/// (`STATE_HOLE | STATE_ZERO` for unallocated, 0 for data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes; never 0.
    pub length: u64,
    /// `base:allocation` bits.
    pub flags: u32,
}

/// Splits `len` bytes described by `runs` (from the same offset) into pieces of
/// (length, reads as zeroes): `STATE_ZERO` runs are zero pieces, everything else —
/// including bytes past the last run — is data; equal neighbours are merged, empty runs
/// dropped. The pieces are non-empty and add up to `len`.
pub(crate) fn zero_pieces(runs: &[Extent], len: u64) -> Vec<(u64, bool)> {
    let mut pieces: Vec<(u64, bool)> = Vec::new();
    let mut covered = 0u64;
    let tail = Extent { length: u64::MAX, flags: 0 };
    for ext in runs.iter().chain(std::iter::once(&tail)) {
        if covered >= len {
            break;
        }
        let n = ext.length.min(len - covered);
        if n == 0 {
            continue;
        }
        let zero = ext.flags & STATE_ZERO != 0;
        match pieces.last_mut() {
            Some((l, z)) if *z == zero => *l += n,
            _ => pieces.push((n, zero)),
        }
        covered += n;
    }
    pieces
}

/// How a WRITE_ZEROES may be carried out (§7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroFlags {
    /// No NO_HOLE flag: the export may unmap the range instead of writing zeroes.
    pub may_trim: bool,
    /// FAST_ZERO: fail at once with `ENOTSUP`, changing nothing, unless the zeroing is
    /// cheaper than writing zeroes (for thinly: unmapping whole data blocks).
    pub fast_only: bool,
    /// FUA: durable before the reply.
    pub fua: bool,
}

/// A block device served over NBD.
pub trait Export: Send + Sync {
    /// Virtual size in bytes.
    fn size_bytes(&self) -> u64;
    /// Read-only exports refuse WRITE, TRIM and WRITE_ZEROES with `EPERM`.
    fn read_only(&self) -> bool;
    /// True only if a FLUSH (or FUA) on one connection makes every completed write on
    /// every connection durable (§9.3).
    fn can_multi_conn(&self) -> bool;
    /// Requests aligned to this avoid read-modify-write: e.g. the data block size.
    fn preferred_block_size(&self) -> u32;
    /// Smallest alignment clients that ask are told to obey. Power of two, 1…64 KiB.
    fn min_block_size(&self) -> u32 {
        512
    }
    /// Fills `buf` from `offset`; unallocated ranges read as zeroes.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Reads `[offset, offset+len)` and appends to `out` its data: every byte except those
    /// of the runs it returns marked `STATE_ZERO`, which read as zeroes and are not
    /// appended. Returns the `base:allocation` runs of what it read (covering rules of
    /// `block_status`; a range not described is data). The server answers a structured
    /// READ with this — one call, and holes are never materialised. On error `out` may
    /// hold part of the data; the caller drops it. The default asks `block_status` (a
    /// failure only costs the holes: all is data), then `read`s each data range; an
    /// export that can learn both in one pass should override it.
    fn read_sparse(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<Vec<Extent>> {
        let runs = self.block_status(offset, len).unwrap_or_default();
        let mut at = offset;
        for (n, zero) in zero_pieces(&runs, len) {
            if !zero {
                let start = out.len();
                out.resize(start + n as usize, 0);
                self.read(at, &mut out[start..])?;
            }
            at += n;
        }
        Ok(runs)
    }
    /// Writes `data` at `offset`; durable before returning if `fua`.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()>;
    /// Makes `[offset, offset+len)` read as zeroes; see `ZeroFlags`.
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()>;
    /// May discard any part of the range (a hint).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()>;
    /// Makes every write completed before the call durable.
    fn flush(&self) -> io::Result<()>;
    /// Prefetch hint; must not change contents.
    fn cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// `base:allocation` runs from `offset`, contiguous, each non-empty, covering at
    /// least a prefix of `[offset, offset+len)`; runs past the end are clipped by the
    /// server. Unallocated ranges are `STATE_HOLE | STATE_ZERO`. The default `read_sparse`
    /// also uses this to find the ranges a READ answers with OFFSET_HOLE chunks.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
    /// `qemu:allocation-depth` runs of (length, depth): 0 unallocated, 1 owned by this
    /// volume, 2 shared with another device. Same covering rules as `block_status`.
    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>>;
    /// Meta contexts this export serves besides `base:allocation` and
    /// `qemu:allocation-depth`, by full name (`namespace:leaf`, e.g.
    /// `qemu:dirty-bitmap:NAME`). Asked at each LIST/SET_META_CONTEXT; the first
    /// `MAX_EXTRA_META_CONTEXTS` count. None by default.
    fn extra_meta_contexts(&self) -> Vec<String> {
        Vec::new()
    }
    /// Status runs of (length, flags) for the extra context `name` (one that
    /// `extra_meta_contexts` offered when the client selected it). Same covering rules as
    /// `block_status`; runs past `max_runs` are dropped by the server, so an export whose
    /// status costs work per run may stop there (`max_runs` is 1 for REQ_ONE, which qemu
    /// sends on every request). A context that has gone away since must fail (e.g.
    /// `ENOENT`): the client gets an error reply for that request and the connection goes on.
    fn extra_meta_status(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        max_runs: usize,
    ) -> io::Result<Vec<(u64, u32)>> {
        let _ = (name, offset, len, max_runs);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Finds exports by name. Exports may appear and disappear at runtime; a connection
/// keeps the `Arc` it opened until it closes.
pub trait ExportRegistry: Send + Sync {
    /// (name, description) of every export, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<(String, String)>;
    /// The export called `name`; `""` is the default export.
    fn open(&self, name: &str) -> Option<Arc<dyn Export>>;
    /// The real name of the default export, so an access policy judges it by that name;
    /// `None` (the default): the policy is asked about `""` itself.
    fn default_name(&self) -> Option<String> {
        None
    }
}

/// A registry held in memory: a list of named exports that can change at runtime.
/// The default export (`""`) is the one named `""` if present, else the first.
#[derive(Default)]
pub struct ExportTable {
    entries: RwLock<Vec<TableEntry>>,
}

/// (name, description, export).
type TableEntry = (String, String, Arc<dyn Export>);

impl ExportTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the export called `name`.
    pub fn insert(&self, name: &str, description: &str, export: Arc<dyn Export>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(n, _, _)| n != name);
        entries.push((name.to_owned(), description.to_owned(), export));
    }

    /// Removes the export called `name`; open connections keep serving it.
    pub fn remove(&self, name: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let before = entries.len();
        entries.retain(|(n, _, _)| n != name);
        entries.len() != before
    }
}

impl ExportRegistry for ExportTable {
    fn list(&self) -> Vec<(String, String)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.iter().map(|(n, d, _)| (n.clone(), d.clone())).collect()
    }

    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let found = entries.iter().find(|(n, _, _)| n == name);
        let found = match (found, name.is_empty()) {
            (Some(e), _) => Some(e),
            (None, true) => entries.first(),
            (None, false) => None,
        };
        found.map(|(_, _, e)| Arc::clone(e))
    }

    fn default_name(&self) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let named_empty = entries.iter().any(|(n, _, _)| n.is_empty());
        if named_empty {
            return Some(String::new());
        }
        entries.first().map(|(n, _, _)| n.clone())
    }
}

/// An export for tests: a `MemExport` that also offers `qemu:dirty-bitmap:` contexts
/// whose status is "all dirty"; one named `qemu:dirty-bitmap:gone` is listed but fails
/// (like a snapshot deleted after the client selected it).
#[cfg(test)]
pub(crate) struct WithBitmaps(pub crate::MemExport);

#[cfg(test)]
impl Export for WithBitmaps {
    fn size_bytes(&self) -> u64 {
        self.0.size_bytes()
    }
    fn read_only(&self) -> bool {
        self.0.read_only()
    }
    fn can_multi_conn(&self) -> bool {
        self.0.can_multi_conn()
    }
    fn preferred_block_size(&self) -> u32 {
        self.0.preferred_block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.0.write(offset, data, fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()> {
        self.0.write_zeroes(offset, len, flags)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.0.trim(offset, len, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.0.block_status(offset, len)
    }
    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        self.0.allocation_depth(offset, len)
    }
    fn extra_meta_contexts(&self) -> Vec<String> {
        ["qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:gone"].map(String::from).to_vec()
    }
    fn extra_meta_status(
        &self,
        name: &str,
        _: u64,
        len: u64,
        _: usize,
    ) -> io::Result<Vec<(u64, u32)>> {
        match name {
            "qemu:dirty-bitmap:s1" => Ok(vec![(len, STATE_DIRTY)]),
            _ => Err(io::Error::from_raw_os_error(2)), // ENOENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pieces_are_clipped_merged_and_end_in_data() {
        let hole = |length| Extent { length, flags: STATE_HOLE | STATE_ZERO };
        let data = |length| Extent { length, flags: 0 };
        let only_hole = Extent { length: 10, flags: STATE_HOLE };
        let runs = [hole(100), hole(50), data(0), data(20), only_hole, hole(500)];
        assert_eq!(zero_pieces(&runs, 200), vec![(150, true), (30, false), (20, true)]);
        assert_eq!(zero_pieces(&runs[..2], 400), vec![(150, true), (250, false)]);
        assert_eq!(zero_pieces(&[], 7), vec![(7, false)]);
        assert_eq!(zero_pieces(&runs, 0), Vec::new());
    }
}
