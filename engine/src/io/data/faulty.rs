//! A fault-injecting data device: like `FaultyDevice`, it keeps what is durable apart from
//! what was written since the last sync, so a test can simulate a power cut that keeps any
//! subset of the unsynced writes (torn at 512-byte sectors), and it can fail I/O on demand.

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
}

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
        s.current.punch(offset, len);
        s.pending.push(Op::Punch { offset, len });
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.lock();
        Self::budget(&mut s)?;
        s.durable = s.current.clone();
        s.pending.clear();
        Ok(())
    }
}
