//! A control-socket session over arbitrary bytes: the harness of the `control_request` fuzz
//! target (`server/fuzz`) and of this crate's replay of its seeds. The bytes are what a
//! client writes on the control socket; they go through `control::serve_lines` (line
//! framing, JSON parsing, dispatch) against a fresh in-memory pool. Only with the `testing`
//! feature.
//!
//! Oracles, besides "no panic, no hang, bounded memory":
//! - every answer is one line holding a `Response`, and a failed one carries an errno;
//! - a refused request leaves the pool as it was (status and volume list);
//! - input that is UTF-8 with no over-long line gets exactly one answer per line;
//! - afterwards the pool commits and its metadata checks clean.

use crate::control::{serve_lines, Response, MAX_REQUEST_BYTES};
use std::io::{self, Write};
use std::sync::Arc;
use thinly_engine::fsck::check::{check, CheckOptions};
use thinly_engine::io::{BlockDevice, DataDevice, MemData, MemDevice};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{OutOfSpacePolicy, Pool, PoolOptions, PoolSettings};

const BLOCK_BYTES: u64 = 64 << 10;
const DATA_BYTES: u64 = 64 * BLOCK_BYTES;
const METADATA_BLOCKS: u64 = 256;

/// A small pool in memory with one volume, `vol0`, as `thinly serve` creates.
pub fn mem_pool() -> (Pool, Arc<dyn BlockDevice>) {
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
    pool.create_volume("vol0", 16 * BLOCK_BYTES).expect("the first volume");
    (pool, dev)
}

/// What a refused request must leave as it was.
fn observable(pool: &Pool) -> String {
    format!("{:?} {:?}", pool.status(), pool.list())
}

/// The client's side of the socket: checks each answer line as it arrives.
struct Client<'a> {
    pool: &'a Pool,
    before: String,
    partial: Vec<u8>,
    nr_answers: usize,
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let r: Response = serde_json::from_slice(&line).expect("an answer is a Response");
            assert_eq!(r.ok, r.errno.is_none(), "errno iff failed: {r:?}");
            let now = observable(self.pool);
            if !r.ok {
                assert_eq!(self.before, now, "a refused request changed the pool: {r:?}");
            }
            self.before = now;
            self.nr_answers += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lines a well-formed input holds, or `None` if its answers cannot be counted in advance
/// (not UTF-8, or a line longer than the limit, which is answered in pieces).
fn nr_lines(data: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(data).ok()?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let max = usize::try_from(MAX_REQUEST_BYTES).ok()?;
    lines.iter().all(|l| l.len() <= max).then_some(lines.len())
}

/// Runs `data` as one control-socket session (see the module doc for the oracles).
pub fn control_session(data: &[u8]) {
    let (pool, dev) = mem_pool();
    let mut client =
        Client { pool: &pool, before: observable(&pool), partial: Vec::new(), nr_answers: 0 };
    serve_lines(&pool, None, data, &mut client);
    assert!(client.partial.is_empty(), "an answer without its newline");
    if let Some(n) = nr_lines(data) {
        assert_eq!(client.nr_answers, n, "one answer per request line");
    }
    pool.commit().expect("the final commit");
    let report = check(dev, &CheckOptions::default()).expect("the check runs");
    assert!(report.problems.is_empty(), "metadata after the session: {:?}", report.problems);
}
