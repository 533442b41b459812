//! A fault-injecting data device: like `FaultyDevice`, it keeps what is durable apart from
//! what was written since the last sync, so a test can simulate a power cut that keeps any
//! subset of the unsynced writes (torn at 512-byte sectors), and it can fail I/O on demand.
//!
//! `FaultyData::device` behaves as a block device at its worst: every byte starts as
//! garbage (not zeros), a discard leaves the old bytes, `set_len` cannot grow it (only
//! `grow_device`, as an LV extend would, with garbage again), and only `zero_range`
//! (written zeros, torn like any write) makes a range read as zeros.

use super::{DataDevice, Pages};
use crate::io::CrashPlan;
use std::io;
use std::sync::Mutex;

#[derive(Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    Punch { offset: u64, len: u64 },
    SetLen(u64),
}

#[derive(Default)]
struct State {
    current: Pages,
    durable: Pages,
    pending: Vec<Op>,
    /// Writes and syncs still allowed before everything fails with EIO.
    ops_left: Option<u64>,
}

pub struct FaultyData {
    state: Mutex<State>,
    /// Block-device behaviour (see the module doc).
    device: bool,
}

/// What a device holds where nobody wrote: anything but zeros.
const GARBAGE: u8 = 0xdb;

fn eio() -> io::Error {
    io::Error::other("injected I/O error on the data device")
}

fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FaultyData {
    pub fn new(len: u64) -> Self {
        let pages = Pages { len, ..Pages::default() };
        FaultyData {
            state: Mutex::new(State { current: pages.clone(), durable: pages, ..State::default() }),
            device: false,
        }
    }

    /// A block device of `len` bytes of garbage (see the module doc).
    pub fn device(len: u64) -> Self {
        let d = FaultyData { device: true, ..Self::new(0) };
        d.grow_device(len);
        d
    }

    /// Grows a `device` to `len` bytes of garbage, durably (the LV was extended).
    pub fn grow_device(&self, len: u64) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let old = s.current.len;
        let garbage = vec![GARBAGE; (len.saturating_sub(old)) as usize];
        for pages in [&mut s.current, &mut s.durable] {
            pages.write(old, &garbage);
            pages.set_len(len.max(old));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After `n` more writes/syncs, every write and sync fails with EIO.
    pub fn fail_after(&self, n: u64) {
        self.lock().ops_left = Some(n);
    }

    pub fn heal(&self) {
        self.lock().ops_left = None;
    }

    /// The device as it would be after a power cut now.
    pub fn crash(&self, plan: CrashPlan) -> FaultyData {
        let s = self.lock();
        let mut image = s.durable.clone();
        let mut rng = match plan {
            CrashPlan::Random { seed } => seed,
            _ => 0,
        };
        for op in &s.pending {
            let keep = match plan {
                CrashPlan::DropAll => 0,
                CrashPlan::KeepAll => 1,
                CrashPlan::Random { .. } => next_rand(&mut rng) % 3,
            };
            match (op, keep) {
                (_, 0) => {}
                (Op::Write { offset, data }, 2) => {
                    // Torn: each 512-byte sector lands or not.
                    for (i, sector) in data.chunks(512).enumerate() {
                        if next_rand(&mut rng) & 1 == 1 {
                            image.write(offset + 512 * i as u64, sector);
                        }
                    }
                }
                (Op::Write { offset, data }, _) => image.write(*offset, data),
                (Op::Punch { offset, len }, _) => image.punch(*offset, *len),
                (Op::SetLen(len), _) => image.set_len(*len),
            }
        }
        FaultyData {
            state: Mutex::new(State { current: image.clone(), durable: image, ..State::default() }),
            device: self.device,
        }
    }

    fn budget(s: &mut State) -> io::Result<()> {
        match &mut s.ops_left {
            Some(0) => Err(eio()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl DataDevice for FaultyData {
    fn len_bytes(&self) -> u64 {
        self.lock().current.len
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        Self::budget(&mut s)?;
        if self.device {
            if len > s.current.len {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "a device cannot grow"));
            }
            return Ok(());
        }
        s.current.set_len(len);
        s.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.lock().current.read(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        Self::budget(&mut s)?;
        if offset + data.len() as u64 > s.current.len {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "write past the end"));
        }
        s.current.write(offset, data);
        s.pending.push(Op::Write { offset, data: data.to_vec() });
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        Self::budget(&mut s)?;
        if self.device {
            // A discard that keeps the old bytes: allowed, and the worst case.
            return Ok(());
        }
        s.current.punch(offset, len);
        s.pending.push(Op::Punch { offset, len });
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.device {
            return self.punch_hole(offset, len);
        }
        self.write_at(offset, &vec![0u8; len as usize])
    }

    fn discard_zeroes(&self) -> bool {
        !self.device
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.lock();
        Self::budget(&mut s)?;
        s.durable = s.current.clone();
        s.pending.clear();
        Ok(())
    }
}
