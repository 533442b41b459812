//! Block-level locks (dm-thin's bio prison): provisioning, copy-on-write and discard of a
//! virtual block are exclusive; reads share. A read holds its blocks' cells across the data
//! I/O, which is what guarantees that the data block it looked up cannot be freed and
//! reused under it (freeing needs the mapping to change, which needs the cell exclusively).
//!
//! Callers that hold several cells take them in ascending (device, block) order.

use super::stats::{Clock, PoolCounter, Stats};
use crate::block_manager::BlockMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Shards of the lock table: enough that independent blocks rarely meet on one mutex.
const SHARDS: usize = 64;

#[derive(Default)]
struct Cell {
    readers: u32,
    writer: bool,
    /// Threads waiting for this cell: a release wakes them only when there are some
    /// (a futex wake is a system call even with nobody to wake).
    waiters: u32,
}

#[derive(Default)]
struct Shard {
    cells: Mutex<BlockMap<Cell>>,
    released: Condvar,
}

/// Device ids are 24 bits and block numbers 40: one u64 names a cell.
fn cell_key(dev: u64, block: u64) -> u64 {
    debug_assert!(dev < 1 << 24 && block < 1 << 40);
    dev << 40 | block
}

pub struct Prison {
    shards: Vec<Shard>,
    /// Where waits for a cell are counted (the pool's statistics).
    stats: Arc<Stats>,
}

/// A held cell; released on drop.
pub struct CellGuard<'a> {
    prison: &'a Prison,
    key: u64,
    exclusive: bool,
}

impl Default for Prison {
    fn default() -> Self {
        Prison::with_stats(Arc::default())
    }
}

impl Prison {
    /// A prison that counts its waits in `stats`.
    pub fn with_stats(stats: Arc<Stats>) -> Prison {
        Prison { shards: (0..SHARDS).map(|_| Shard::default()).collect(), stats }
    }

    fn shard(&self, key: u64) -> &Shard {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    fn cells(shard: &Shard) -> MutexGuard<'_, BlockMap<Cell>> {
        shard.cells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks block `block` of device `dev`, waiting for conflicting holders.
    pub fn lock(&self, dev: u64, block: u64, exclusive: bool) -> CellGuard<'_> {
        let key = cell_key(dev, block);
        let shard = self.shard(key);
        let mut cells = Self::cells(shard);
        let mut waited = false;
        let mut clock = None;
        loop {
            let cell = cells.entry(key).or_default();
            if waited {
                cell.waiters -= 1;
            }
            let free = if exclusive { !cell.writer && cell.readers == 0 } else { !cell.writer };
            if free {
                if exclusive {
                    cell.writer = true;
                } else {
                    cell.readers += 1;
                }
                drop(cells);
                if let Some(t) = clock {
                    self.stats.waited(PoolCounter::CellWaits, PoolCounter::CellWaitNanos, t);
                }
                return CellGuard { prison: self, key, exclusive };
            }
            cell.waiters += 1;
            waited = true;
            clock.get_or_insert_with(Clock::start);
            cells = shard.released.wait(cells).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Cells in use (for tests).
    #[cfg(test)]
    pub fn nr_held(&self) -> usize {
        self.shards.iter().map(|s| Self::cells(s).len()).sum()
    }
}

impl<'a> CellGuard<'a> {
    /// Keeps the cell locked past this guard's scope (a parked mapping holds its cell
    /// until the commit that inserts it); `Prison::release` ends it.
    pub fn into_held(self) -> HeldCell {
        let held = HeldCell { key: self.key, exclusive: self.exclusive };
        std::mem::forget(self);
        held
    }
}

/// A cell kept locked with no guard in scope; give it back with `Prison::release`.
#[derive(Debug)]
#[must_use = "a held cell stays locked until it is released"]
pub struct HeldCell {
    key: u64,
    exclusive: bool,
}

impl Prison {
    /// Unlocks a cell kept with `CellGuard::into_held`.
    pub fn release(&self, held: HeldCell) {
        self.unlock(held.key, held.exclusive);
    }

    fn unlock(&self, key: u64, exclusive: bool) {
        let shard = self.shard(key);
        let mut cells = Self::cells(shard);
        let mut wake = false;
        if let Some(cell) = cells.get_mut(&key) {
            if exclusive {
                cell.writer = false;
            } else {
                cell.readers -= 1;
            }
            wake = cell.waiters > 0;
            if !cell.writer && cell.readers == 0 && cell.waiters == 0 {
                cells.remove(&key);
            }
        }
        drop(cells);
        if wake {
            shard.released.notify_all();
        }
    }
}

impl Drop for CellGuard<'_> {
    fn drop(&mut self) {
        self.prison.unlock(self.key, self.exclusive);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn readers_share_and_a_writer_waits_for_them() {
        let p = Arc::new(Prison::default());
        let r1 = p.lock(1, 5, false);
        let r2 = p.lock(1, 5, false);
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let _w = p.lock(1, 5, true);
                done.store(true, Ordering::SeqCst);
            })
        };
        // Other blocks are independent.
        drop(p.lock(1, 6, true));
        drop(p.lock(2, 5, true));
        assert!(!done.load(Ordering::SeqCst));
        drop(r1);
        drop(r2);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(p.nr_held(), 0);
    }

    #[test]
    fn a_held_cell_stays_locked_until_released() {
        let p = Arc::new(Prison::default());
        let held = p.lock(3, 9, true).into_held();
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let _r = p.lock(3, 9, false);
                done.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!done.load(Ordering::SeqCst));
        p.release(held);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(p.nr_held(), 0);
    }

    #[test]
    #[cfg(not(feature = "no-stats"))]
    fn a_wait_for_a_held_cell_is_counted_and_a_free_cell_is_not() {
        let stats = Arc::new(Stats::default());
        let p = Arc::new(Prison::with_stats(stats.clone()));
        drop(p.lock(1, 1, true));
        let held = p.lock(1, 2, true).into_held();
        let t = {
            let p = p.clone();
            std::thread::spawn(move || drop(p.lock(1, 2, false)))
        };
        while super::Prison::cells(p.shard(cell_key(1, 2))).get(&cell_key(1, 2)).unwrap().waiters
            == 0
        {
            std::thread::yield_now();
        }
        p.release(held);
        t.join().unwrap();
        let s = stats.snapshot(1, std::iter::empty(), &[]);
        assert_eq!(s.pool_counter(PoolCounter::CellWaits.name()), 1);
        assert!(s.pool_counter(PoolCounter::CellWaitNanos.name()) > 0);
    }
}
