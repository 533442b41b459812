//! `pool_ops`: an op script read from the fuzz input, run against an in-memory pool.

use std::sync::Arc;
use thinly_engine::fsck::check::{check, CheckOptions};
use thinly_engine::io::MemDevice;
use thinly_engine::io::{BlockDevice, DataDevice, MemData};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{OutOfSpacePolicy, Pool, PoolOptions, PoolSettings};

const BLOCK_BYTES: u64 = 64 << 10;
const DATA_BYTES: u64 = 64 * BLOCK_BYTES;
const METADATA_BLOCKS: u64 = 256;
/// Ops run from one input, so every input stays cheap.
const MAX_OPS: usize = 64;
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Bytes of the fuzz input, read front to back; zeros once it runs out.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn name(&mut self) -> &'static str {
        NAMES[usize::from(self.byte()) % NAMES.len()]
    }
    /// A byte count up to a few data blocks, often block-aligned.
    fn len(&mut self) -> u64 {
        let b = u64::from(self.byte());
        if b & 1 == 0 {
            (b >> 1) % 4 * BLOCK_BYTES
        } else {
            b * 517 % (3 * BLOCK_BYTES)
        }
    }
    fn offset(&mut self) -> u64 {
        u64::from(self.byte()) * 4093 % (8 * BLOCK_BYTES)
    }
    fn text(&mut self) -> String {
        const WORDS: [&str; 8] = [
            "create_thin",
            "create_snap",
            "delete",
            "set_transaction_id",
            "reserve_metadata_snap",
            "release_metadata_snap",
            "trim",
            "",
        ];
        let mut text = WORDS[usize::from(self.byte()) % WORDS.len()].to_string();
        for _ in 0..self.byte() % 4 {
            text.push(' ');
            match self.byte() {
                b @ 0..=199 => text.push_str(&(b % 8).to_string()),
                b => text.push(char::from(b)),
            }
        }
        text
    }
}

fn new_pool() -> (Pool, Arc<dyn BlockDevice>) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(METADATA_BLOCKS));
    let data: Arc<dyn DataDevice> = Arc::new(MemData::new(DATA_BYTES));
    let settings = PoolSettings {
        commit_interval_ms: 0,
        out_of_space: OutOfSpacePolicy::Error,
        data_block_size_bytes: BLOCK_BYTES,
        ..PoolSettings::default()
    };
    let opts = PoolOptions {
        data_size_bytes: DATA_BYTES,
        settings,
        cache_bytes: 1 << 20,
        ..PoolOptions::default()
    };
    let store = Box::new(MemConfigStore::default());
    let pool = Pool::format_on(dev.clone(), data, store, &opts, None, "fuzz").expect("format");
    (pool, dev)
}

/// What a refused management op must leave as it was.
fn observable(pool: &Pool) -> String {
    format!("{:?} {:?}", pool.status(), pool.list())
}

/// Runs one management op or dm message; a refusal must change nothing observable.
fn manage(pool: &Pool, s: &mut Script, kind: u8) {
    let before = observable(pool);
    let refused = match kind {
        0 => pool.create_volume(s.name(), s.len().max(1) * 8).is_err(),
        1 => pool.snapshot(s.name(), s.name(), s.byte() & 1 == 1).is_err(),
        2 => pool.delete_volume(s.name()).is_err(),
        3 => pool.resize_volume(s.name(), s.len() * 8).is_err(),
        _ => pool.message(&s.text()).is_err(),
    };
    if refused {
        assert_eq!(before, observable(pool), "a refused op changed the pool");
    }
}

/// Runs one I/O op; a write that succeeds must read back.
fn io(pool: &Pool, s: &mut Script, kind: u8) {
    let Ok(vol) = pool.volume(s.name()) else { return };
    let (offset, len) = (s.offset(), s.len());
    match kind {
        0 => {
            let fill = s.byte();
            let data = vec![fill; len as usize];
            if vol.write(offset, &data, fill & 1 == 1).is_ok() {
                let mut back = vec![0u8; len as usize];
                vol.read(offset, &mut back).expect("a written range reads");
                assert!(back == data, "a write does not read back");
            }
        }
        1 => {
            let _ = vol.discard(offset, len, false);
        }
        2 => {
            if vol.write_zeroes(offset, len, s.byte() & 1 == 1, false).is_ok() {
                let mut back = vec![1u8; len as usize];
                vol.read(offset, &mut back).expect("a zeroed range reads");
                assert!(back.iter().all(|&b| b == 0), "write_zeroes does not read back as zeros");
            }
        }
        _ => {
            let _ = vol.flush();
        }
    }
}

pub fn pool_ops(data: &[u8]) {
    let (pool, dev) = new_pool();
    let mut s = Script(data);
    for _ in 0..MAX_OPS {
        if s.0.is_empty() {
            break;
        }
        let op = s.byte();
        match op % 10 {
            k @ 0..=4 => manage(&pool, &mut s, k),
            k @ 5..=8 => io(&pool, &mut s, k - 5),
            _ => {
                let _ = pool.commit();
            }
        }
    }
    pool.commit().expect("the final commit");
    let report = check(dev, &CheckOptions::default()).expect("the check runs");
    assert!(report.problems.is_empty(), "metadata after the ops: {:?}", report.problems);
    drop(pool);
}
