//! The pool directory as the server and the `thinly` commands name it: `--pool DIR` (default
//! `./thinly-pool`), and opening the pool there or creating it with its first volume.

use crate::size;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use thinly_engine::io::IoMode;
use thinly_engine::pool::{Pool, PoolOptions};

/// Where the pool lives when --pool is not given.
pub const DEFAULT_POOL_DIR: &str = "./thinly-pool";
/// The data size of a pool that `thinly serve` creates on its own.
pub const DEFAULT_DATA_BYTES: u64 = 16 << 30;

/// The value parser of every size flag (see `size`).
pub fn size_arg(s: &str) -> Result<u64, String> {
    size::parse_size(s)
}

#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// The pool directory [default: ./thinly-pool].
    #[arg(long = "pool", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl PoolArgs {
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_POOL_DIR))
    }

    /// `--pool` was given (not the default directory).
    pub fn explicit(&self) -> bool {
        self.dir.is_some()
    }
}

pub fn default_pool_options() -> PoolOptions {
    PoolOptions { data_size_bytes: DEFAULT_DATA_BYTES, ..PoolOptions::default() }
}

/// Opens the pool in `dir`, or creates it (with `first_volume`) if there is none.
pub fn open_or_create(
    dir: &Path,
    opts: &PoolOptions,
    first_volume: Option<(&str, u64)>,
) -> Result<Pool> {
    if dir.join("metadata").exists() {
        return Pool::open(dir, IoMode::Auto)
            .with_context(|| format!("opening the pool in {}", dir.display()));
    }
    let pool =
        Pool::create(dir, opts).with_context(|| format!("creating a pool in {}", dir.display()))?;
    eprintln!(
        "thinly: created a pool in {} ({} of data)",
        dir.display(),
        size::format_size(opts.data_size_bytes)
    );
    if let Some((name, bytes)) = first_volume {
        pool.create_volume(name, bytes).with_context(|| format!("creating volume {name}"))?;
        eprintln!("thinly: created volume {name} ({})", size::format_size(bytes));
    }
    Ok(pool)
}
