//! Runs an operation script on thinly: a fresh pool in a directory, each operation through
//! [`Pool`]'s message vocabulary and [`thinly_engine::pool::Volume`] I/O, as the kernel runs it through
//! `dmsetup message` and block I/O. A failed operation (no space) is recorded, not fatal.

use super::observe::{block_sum, ReaderView};
use super::opscript::{Geometry, Op, Script};
use std::collections::BTreeMap;
use std::path::Path;
use thinly_engine::io::IoMode;
use thinly_engine::pool::{OutOfSpacePolicy, Pool, PoolError, PoolOptions, PoolSettings};

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpOutcome {
    pub line: usize,
    pub ok: bool,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// The options of the pool both sides build for a script: the geometry's sizes, no low
/// water mark, fail writes at once when out of space (the kernel's `error_if_no_space`),
/// zeroing on (the kernel's default), and commits only on management and at the end.
pub fn pool_options(g: &Geometry) -> PoolOptions {
    PoolOptions {
        data_size_bytes: g.nr_data_blocks * g.block_size_bytes,
        metadata_size_bytes: Some(g.metadata_size_bytes),
        settings: PoolSettings {
            data_block_size_bytes: g.block_size_bytes,
            low_water_mark_blocks: 0,
            out_of_space: OutOfSpacePolicy::Error,
            zeroing: true,
            commit_interval_ms: 0,
            auto_extend: None,
            snapshot_cache: Default::default(),
            overprovision: Default::default(),
        },
        ..PoolOptions::default()
    }
}

/// What thinly did with a script.
#[derive(Debug, Clone)]
pub struct ThinlyRun {
    pub outcomes: Vec<OpOutcome>,
    pub reader: ReaderView,
    /// `Pool::status()` at the end, before the pool closed (the kernel's status fields).
    pub status: thinly_engine::pool::PoolStatus,
}

/// Creates a pool in `dir` (which must not hold one), runs `script`, reads back every block
/// of every device that exists at the end, and closes the pool.
pub fn run_thinly(dir: &Path, script: &Script) -> Result<ThinlyRun, PoolError> {
    let g = &script.geometry;
    let pool = Pool::create(dir, &pool_options(g))?;
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for step in &script.steps {
        let r = apply(&pool, g, &mut names, &step.op);
        outcomes.push(OpOutcome {
            line: step.line,
            ok: r.is_ok(),
            error: r.err().map(|e| e.to_string()),
        });
    }
    pool.commit()?;
    let mut reader = ReaderView::new();
    let mut buf = vec![0u8; g.block_size_bytes as usize];
    for (&dev, name) in &names {
        let vol = pool.volume(name)?;
        let mut sums = Vec::new();
        for b in 0..g.thin_blocks() {
            vol.read(b * g.block_size_bytes, &mut buf)?;
            sums.push(block_sum(&buf));
        }
        reader.insert(dev, sums);
    }
    let status = pool.status();
    pool.close()?;
    Ok(ThinlyRun { outcomes, reader, status })
}

fn apply(
    pool: &Pool,
    g: &Geometry,
    names: &mut BTreeMap<u64, String>,
    op: &Op,
) -> Result<(), PoolError> {
    let vol = |names: &BTreeMap<u64, String>, dev: &u64| {
        let name = names.get(dev).ok_or_else(|| PoolError::Invalid(format!("no device {dev}")))?;
        pool.volume(name)
    };
    match op {
        Op::CreateThin { id } => {
            let name = pool.message(&format!("create_thin {id}"))?;
            pool.resize_volume(&name, g.thin_size_bytes)?;
            names.insert(*id, name);
        }
        Op::CreateSnap { id, origin } => {
            let name = pool.message(&format!("create_snap {id} {origin}"))?;
            names.insert(*id, name);
        }
        Op::Write { dev, offset, len, pattern } => {
            vol(names, dev)?.write(*offset, &pattern.bytes(*offset, *len), false)?
        }
        Op::Discard { dev, offset, len } => vol(names, dev)?.discard(*offset, *len, false)?,
        Op::Delete { dev } => {
            pool.message(&format!("delete {dev}"))?;
            names.remove(dev);
        }
        Op::Commit => pool.commit()?,
        Op::SetTransactionId { old, new } => {
            pool.message(&format!("set_transaction_id {old} {new}"))?;
        }
    }
    Ok(())
}

/// Opens an existing pool directory (for tests that read a pool after the kernel wrote it).
pub fn open(dir: &Path) -> Result<Pool, PoolError> {
    Pool::open(dir, IoMode::Auto)
}
