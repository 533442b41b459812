//! The pool commands of `thinly`: `serve`, `pool create|status|extend`, `create`,
//! `snapshot`, `delete`, `resize`, `list`, `status`, `message`, `diff`. Management works on a pool
//! that is being served (through its control socket) and on one that is not (opened here,
//! exclusively, for the one operation); both run `control::execute`. The daemon itself
//! (`serve`, the control socket, the NBD exports) lives in the `thinly-server` crate; this
//! module parses arguments and prints.

pub mod diff;
pub mod report;
pub mod show;

pub use thinly_server::pool_dir::{size_arg, PoolArgs};
pub use thinly_server::{control, serve, size};

use anyhow::{bail, Context, Result};
use control::{execute, Request, Response};
use std::path::Path;
use thinly_engine::io::IoMode;
use thinly_engine::pool::{
    OutOfSpacePolicy, Overprovision, Pool, PoolOptions, PoolSettings, SnapshotCache,
};

/// The columns and units of `list` and `status` (see `report`).
#[derive(Debug, Clone, clap::Args)]
pub struct TableArgs {
    /// Columns, lvs-style: lv_name, thin_id, lv_size, data_percent, metadata_percent,
    /// mapped, exclusive, shared, origin, lv_permissions (`+FIELD` adds to the defaults).
    #[arg(short = 'o', long = "options", value_name = "FIELDS")]
    pub fields: Option<String>,
    /// Size units, as lvs: h (human), b, s, k, m, g, t (powers of 1024; upper case: of 1000).
    #[arg(long, value_parser = report::parse_units, conflicts_with = "bytes")]
    pub units: Option<report::Units>,
    /// Sizes in whole bytes, without a unit.
    #[arg(long)]
    pub bytes: bool,
}

impl TableArgs {
    pub fn units(&self) -> report::Units {
        match (self.bytes, self.units) {
            (true, _) => report::Units::Bytes,
            (false, u) => u.unwrap_or(report::Units::Human),
        }
    }

    pub fn fields(&self) -> Result<Vec<&'static str>> {
        report::parse_fields(self.fields.as_deref()).map_err(anyhow::Error::msg)
    }
}

/// Runs a request on the pool in `dir`: through its control socket if it is being served,
/// else on the pool opened here.
pub fn run_request(dir: &Path, req: &Request) -> Result<Response> {
    if let Some(r) = control::send(dir, req) {
        return r.with_context(|| format!("talking to the server of {}", dir.display()));
    }
    if !dir.join("metadata").exists() {
        bail!(
            "no pool in {} (create one with `thinly pool create` or `thinly serve`)",
            dir.display()
        );
    }
    let pool = Pool::open(dir, IoMode::Auto)
        .with_context(|| format!("opening the pool in {}", dir.display()))?;
    let response = execute(&pool, req);
    pool.close().context("committing the pool")?;
    Ok(response)
}

#[derive(Debug, clap::Args)]
pub struct PoolCreateArgs {
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Data size (bytes, or with a unit: 128s sectors, 64K, 10G, 1T).
    #[arg(long, value_parser = size_arg, default_value = "16G")]
    pub size: u64,
    /// Data block size (64K … 1G, a multiple of 64K).
    #[arg(long, value_parser = size_arg, default_value = "64K")]
    pub block_size: u64,
    /// Metadata size [default: thin_metadata_size's estimate for the data size].
    #[arg(long, value_parser = size_arg)]
    pub metadata_size: Option<u64>,
    /// Low water mark, in data blocks.
    #[arg(long, default_value_t = 0)]
    pub low_water_mark: u64,
    /// What a write does when no data block is free.
    #[arg(long, value_parser = ["queue", "error"], default_value = "queue")]
    pub out_of_space: String,
    /// How long `queue` holds a write before failing it with ENOSPC.
    #[arg(long, default_value_t = 60_000)]
    pub queue_timeout_ms: u64,
    /// Do not zero the unwritten rest of new blocks.
    #[arg(long)]
    pub no_zeroing: bool,
    /// Commit at least this often (0: only on flush and management).
    #[arg(long, default_value_t = 1000)]
    pub commit_interval_ms: u64,
    /// After copy-on-write, the old copy's cached pages: `auto` drops them while the
    /// writing volume is the only one open (the new copy reuses the memory), `keep` leaves
    /// them to the kernel.
    #[arg(long, value_parser = ["auto", "keep"], default_value = "auto")]
    pub snapshot_cache: String,
    /// Volumes whose virtual sizes add up to more than the data: `warn` (with the
    /// over-provisioning ratio, as LVM does) or `error` (refuse). Stored in pool.json.
    #[arg(long, value_parser = ["warn", "error"], default_value = "warn")]
    pub overprovision: String,
}

pub fn pool_create(a: &PoolCreateArgs) -> Result<()> {
    let settings = PoolSettings {
        data_block_size_bytes: a.block_size,
        low_water_mark_blocks: a.low_water_mark,
        out_of_space: if a.out_of_space == "error" {
            OutOfSpacePolicy::Error
        } else {
            OutOfSpacePolicy::Queue { timeout_ms: a.queue_timeout_ms }
        },
        zeroing: !a.no_zeroing,
        commit_interval_ms: a.commit_interval_ms,
        auto_extend: None,
        snapshot_cache: if a.snapshot_cache == "keep" {
            SnapshotCache::Keep
        } else {
            SnapshotCache::Auto
        },
        overprovision: if a.overprovision == "error" {
            Overprovision::Error
        } else {
            Overprovision::Warn
        },
    };
    let opts = PoolOptions {
        data_size_bytes: a.size,
        metadata_size_bytes: a.metadata_size,
        settings,
        ..Default::default()
    };
    let dir = a.pool.dir();
    let pool = Pool::create(&dir, &opts)
        .with_context(|| format!("creating a pool in {}", dir.display()))?;
    let s = pool.status();
    pool.close()?;
    println!(
        "created pool {}: {} of data in {} blocks of {}, {} of metadata",
        dir.display(),
        size::format_size(s.total_data_blocks.saturating_mul(s.data_block_size_bytes)),
        s.total_data_blocks,
        size::format_size(s.data_block_size_bytes),
        size::format_size(
            s.total_metadata_blocks.saturating_mul(thinly_engine::limits::META_BLOCK_SIZE as u64)
        ),
    );
    Ok(())
}

/// Prints a response: the JSON result with --json, else `human(result)`.
pub fn print_response(
    r: Response,
    json: bool,
    human: impl FnOnce(&serde_json::Value) -> String,
) -> Result<()> {
    for w in &r.warnings {
        eprintln!("thinly: {w}");
    }
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "failed".into()));
    }
    let text = if json { serde_json::to_string_pretty(&r.result)? } else { human(&r.result) };
    if !text.is_empty() {
        print_quietly(&format!("{text}\n"))?;
    }
    Ok(())
}

/// Writes `text` on stdout; a reader that went away (`thinly list | head -0`) is not an
/// error: the command's work is done, it exits quietly.
pub fn print_quietly(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}
