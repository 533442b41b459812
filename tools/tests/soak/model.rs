//! What the soak expects of the volume: one region per connection, modelled per 4 KiB
//! sector, and the snapshots the control socket acknowledged.

/// Granularity of the model (every write and trim covers whole sectors).
pub const SECTOR: usize = 4096;

/// One connection's bytes of the volume. `acked` is what the connection's acknowledged
/// writes and trims left; `flushed` the same as of its last completed flush; `dirty` marks
/// sectors changed (or sent to be changed) since then: after a crash only those may differ
/// from `flushed`.
pub struct Region {
    pub start: u64,
    pub acked: Vec<u8>,
    flushed: Vec<u8>,
    dirty: Vec<bool>,
}

impl Region {
    pub fn new(start: u64, len: usize) -> Region {
        assert_eq!(len % SECTOR, 0);
        Region {
            start,
            acked: vec![0; len],
            flushed: vec![0; len],
            dirty: vec![false; len / SECTOR],
        }
    }

    pub fn len(&self) -> usize {
        self.acked.len()
    }

    /// Before a write or trim of `[at, at + len)` (region offsets) is sent: from now until
    /// the next completed flush a crash may leave those sectors either way.
    pub fn sending(&mut self, at: usize, len: usize) {
        for s in at / SECTOR..(at + len).div_ceil(SECTOR) {
            self.dirty[s] = true;
        }
    }

    /// A write (or, with zeros, a trim) was acknowledged.
    pub fn acked(&mut self, at: usize, data: &[u8]) {
        self.acked[at..at + data.len()].copy_from_slice(data);
    }

    /// A flush completed: everything acknowledged before it is durable.
    pub fn flush_completed(&mut self) {
        self.flushed.copy_from_slice(&self.acked);
        self.dirty.fill(false);
    }

    /// After a crash: every sector not dirty reads what it held at the last flush. Returns
    /// the first sector that does not, if any.
    pub fn check_after_crash(&self, actual: &[u8]) -> Option<usize> {
        (0..self.dirty.len()).find(|&s| {
            let r = s * SECTOR..(s + 1) * SECTOR;
            !self.dirty[s] && actual[r.clone()] != self.flushed[r]
        })
    }

    /// The volume as read becomes the model (dirty sectors settled one way or the other).
    pub fn adopt(&mut self, actual: &[u8]) {
        self.acked.copy_from_slice(actual);
        self.flush_completed();
    }

    /// The first sector where `actual` differs from what was acknowledged.
    pub fn first_difference(&self, actual: &[u8]) -> Option<usize> {
        (0..self.dirty.len()).find(|&s| {
            let r = s * SECTOR..(s + 1) * SECTOR;
            actual[r.clone()] != self.acked[r]
        })
    }
}

/// Snapshots of the volume: `live` were acknowledged created (and not deleted), `gone`
/// acknowledged deleted, `doubt` had a request in flight when the server was killed.
#[derive(Default)]
pub struct Snapshots {
    pub next: u64,
    pub live: Vec<String>,
    pub gone: Vec<String>,
    pub doubt: Vec<String>,
    pub nr_created: u64,
    pub nr_deleted: u64,
}

impl Snapshots {
    /// Checks the volume names a restarted server lists, then settles the doubtful ones.
    pub fn check(&mut self, names: &[String]) {
        for s in &self.live {
            assert!(names.contains(s), "acknowledged snapshot {s} is missing: {names:?}");
        }
        for s in &self.gone {
            assert!(!names.contains(s), "snapshot {s} was acknowledged deleted: {names:?}");
        }
        for s in std::mem::take(&mut self.doubt) {
            if names.contains(&s) {
                self.live.push(s);
            } else {
                self.gone.push(s);
            }
        }
    }
}
