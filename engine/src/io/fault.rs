//! A fault-injecting device for crash and error tests.
//!
//! It keeps two images: what is *durable* (survives a power cut) and the writes issued since
//! the last flush, in order. Reads see the newest data, as a real disk's cache would.
//! `crash_image` simulates a power cut: the durable image plus any subset of the unflushed
//! writes, some of them torn at 512-byte granularity, chosen by a replayable seed. Chosen
//! operations can also be made to fail with EIO (`fail_writes_after`, `fail_reads_of`).

use super::{out_of_range, Block, BlockDevice};
use crate::limits::META_BLOCK_SIZE;
use std::collections::HashSet;
use std::io;
use std::sync::Mutex;

const SECTOR: usize = 512;

/// How a power cut treats the unflushed writes.
#[derive(Debug, Clone, Copy)]
pub enum CrashPlan {
    /// Nothing unflushed survives.
    DropAll,
    /// Every unflushed write survives (as if the cut came just before the next flush).
    KeepAll,
    /// Each unflushed write independently survives, is lost, or is torn (a random subset of
    /// its sectors lands), decided by the seed.
    Random { seed: u64 },
}

#[derive(Default)]
struct State {
    durable: Vec<Box<Block>>,
    pending: Vec<(u64, Box<Block>)>,
    /// Writes (and flushes) still allowed before everything fails with EIO.
    writes_left: Option<u64>,
    /// Flushes still allowed before everything fails with EIO.
    flushes_left: Option<u64>,
    failing_reads: HashSet<u64>,
    nr_writes: u64,
    nr_flushes: u64,
}

pub struct FaultyDevice {
    state: Mutex<State>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error on {what}"))
}

/// splitmix64: a tiny deterministic generator for replayable crash choices.
fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FaultyDevice {
    pub fn new(nr_blocks: u64) -> Self {
        Self::from_image(&vec![0u8; nr_blocks as usize * META_BLOCK_SIZE])
    }

    pub fn from_image(image: &[u8]) -> Self {
        assert_eq!(image.len() % META_BLOCK_SIZE, 0);
        let durable = image
            .chunks_exact(META_BLOCK_SIZE)
            .map(|c| {
                let mut b = Box::new([0u8; META_BLOCK_SIZE]);
                b.copy_from_slice(c);
                b
            })
            .collect();
        FaultyDevice { state: Mutex::new(State { durable, ..State::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After `n` more writes or flushes, every write and flush fails with EIO.
    pub fn fail_writes_after(&self, n: u64) {
        self.lock().writes_left = Some(n);
    }

    /// After `n` more flushes, the next flush and everything after it fail with EIO
    /// (writes before that flush are accepted but not durable).
    pub fn fail_flushes_after(&self, n: u64) {
        self.lock().flushes_left = Some(n);
    }

    /// Reads of these blocks fail with EIO.
    pub fn fail_reads_of(&self, blocks: impl IntoIterator<Item = u64>) {
        self.lock().failing_reads.extend(blocks);
    }

    /// Stops injecting errors.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.writes_left = None;
        s.flushes_left = None;
        s.failing_reads.clear();
    }

    /// Writes and flushes issued so far (a test counts them to choose crash points).
    pub fn nr_writes(&self) -> u64 {
        self.lock().nr_writes
    }

    pub fn nr_flushes(&self) -> u64 {
        self.lock().nr_flushes
    }

    /// Unflushed writes, in issue order.
    pub fn nr_pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// What the device would hold after a power cut now.
    pub fn crash_image(&self, plan: CrashPlan) -> Vec<u8> {
        let s = self.lock();
        let mut blocks: Vec<Box<Block>> = s.durable.clone();
        let mut rng = match plan {
            CrashPlan::Random { seed } => seed,
            _ => 0,
        };
        for (b, data) in &s.pending {
            let Some(target) = blocks.get_mut(*b as usize) else {
                continue;
            };
            match plan {
                CrashPlan::DropAll => {}
                CrashPlan::KeepAll => target.copy_from_slice(&data[..]),
                CrashPlan::Random { .. } => match next_rand(&mut rng) % 3 {
                    0 => {}
                    1 => target.copy_from_slice(&data[..]),
                    _ => {
                        let sectors = next_rand(&mut rng);
                        for i in 0..META_BLOCK_SIZE / SECTOR {
                            if sectors >> i & 1 == 1 {
                                let r = i * SECTOR..(i + 1) * SECTOR;
                                target[r.clone()].copy_from_slice(&data[r]);
                            }
                        }
                    }
                },
            }
        }
        let mut out = Vec::with_capacity(blocks.len() * META_BLOCK_SIZE);
        for b in &blocks {
            out.extend_from_slice(&b[..]);
        }
        out
    }

    fn take_write_budget(s: &mut State, what: &str) -> io::Result<()> {
        if s.flushes_left == Some(u64::MAX) {
            return Err(eio(what));
        }
        match &mut s.writes_left {
            Some(0) => Err(eio(what)),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl BlockDevice for FaultyDevice {
    fn nr_blocks(&self) -> u64 {
        self.lock().durable.len() as u64
    }

    fn read_block(&self, block: u64, buf: &mut Block) -> io::Result<()> {
        let s = self.lock();
        if s.failing_reads.contains(&block) {
            return Err(eio(&format!("read of block {block}")));
        }
        let n = s.durable.len() as u64;
        if block >= n {
            return Err(out_of_range(block, n));
        }
        match s.pending.iter().rev().find(|(b, _)| *b == block) {
            Some((_, data)) => buf.copy_from_slice(&data[..]),
            None => buf.copy_from_slice(&s.durable[block as usize][..]),
        }
        Ok(())
    }

    fn write_block(&self, block: u64, buf: &Block) -> io::Result<()> {
        let mut s = self.lock();
        let n = s.durable.len() as u64;
        if block >= n {
            return Err(out_of_range(block, n));
        }
        Self::take_write_budget(&mut s, &format!("write of block {block}"))?;
        s.nr_writes += 1;
        s.pending.push((block, Box::new(*buf)));
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut s = self.lock();
        Self::take_write_budget(&mut s, "flush")?;
        match &mut s.flushes_left {
            Some(0) | Some(u64::MAX) => {
                s.flushes_left = Some(u64::MAX);
                return Err(eio("flush"));
            }
            Some(n) => *n -= 1,
            None => {}
        }
        s.nr_flushes += 1;
        let pending = std::mem::take(&mut s.pending);
        for (b, data) in pending {
            s.durable[b as usize] = data;
        }
        Ok(())
    }

    fn resize(&self, nr_blocks: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.durable.resize_with(nr_blocks as usize, || Box::new([0u8; META_BLOCK_SIZE]));
        s.pending.retain(|(b, _)| *b < nr_blocks);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(x: u8) -> Block {
        [x; META_BLOCK_SIZE]
    }

    #[test]
    fn unflushed_writes_are_visible_but_not_durable() {
        let d = FaultyDevice::new(4);
        d.write_block(1, &block_of(7)).unwrap();
        let mut buf = [0u8; META_BLOCK_SIZE];
        d.read_block(1, &mut buf).unwrap();
        assert_eq!(buf[0], 7);
        assert!(d.crash_image(CrashPlan::DropAll).iter().all(|&x| x == 0));
        assert_eq!(d.crash_image(CrashPlan::KeepAll)[META_BLOCK_SIZE], 7);
        d.flush().unwrap();
        assert_eq!(d.crash_image(CrashPlan::DropAll)[META_BLOCK_SIZE], 7);
    }

    #[test]
    fn random_crash_tears_at_sector_granularity_and_replays() {
        let d = FaultyDevice::new(2);
        for _ in 0..8 {
            d.write_block(0, &block_of(0xAB)).unwrap();
        }
        let a = d.crash_image(CrashPlan::Random { seed: 5 });
        assert_eq!(a, d.crash_image(CrashPlan::Random { seed: 5 }));
        for sector in a[..META_BLOCK_SIZE].chunks(SECTOR) {
            assert!(sector.iter().all(|&x| x == 0) || sector.iter().all(|&x| x == 0xAB));
        }
    }

    #[test]
    fn injected_errors_fail_and_heal() {
        let d = FaultyDevice::new(2);
        d.fail_writes_after(1);
        d.write_block(0, &block_of(1)).unwrap();
        assert!(d.write_block(1, &block_of(1)).is_err());
        assert!(d.flush().is_err());
        d.fail_reads_of([1]);
        let mut buf = [0u8; META_BLOCK_SIZE];
        assert!(d.read_block(1, &mut buf).is_err());
        d.heal();
        d.read_block(1, &mut buf).unwrap();
        d.flush().unwrap();
    }
}
