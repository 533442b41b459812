//! The management requests that guardrails watch (`thinly_engine::pool::guard` has the
//! rules): create, snapshot, resize and delete as the `thinly` commands and the control
//! socket run them. Each check runs before the operation, so a refusal changes nothing;
//! `force` skips the refusals of resize and delete (never the `overprovision = error`
//! setting: that is the pool's owner speaking). A forced delete of an open volume first
//! closes its NBD connections (`ExportCloser`, when a server runs the request).
//!
//! The dm-thin messages (`thinly message`) do not come here: they keep the kernel's
//! semantics exactly, because scripts written against dm-thin rely on them.

use crate::size::format_size;
use serde_json::Value;
use std::time::Duration;
use thinly_engine::pool::{Pool, PoolError, Provisioning};
use thinly_nbd::ExportCloser;

/// How long a forced delete waits for an open volume's connections to finish what they
/// have in flight and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A result and the warnings that go with it.
pub type Guarded = Result<(Value, Vec<String>), PoolError>;

fn status(pool: &Pool, name: &str) -> Result<Value, PoolError> {
    Ok(serde_json::to_value(pool.volume_status(name)?).unwrap_or_default())
}

/// The warning (or the refusal) for the provisioning `p` a change would make.
fn provisioning(pool: &Pool, p: &Provisioning) -> Result<Vec<String>, PoolError> {
    pool.check_provisioning(p)?;
    Ok(p.is_over().then(|| over_warning(p)).into_iter().collect())
}

/// LVM's over-provisioning warning, in thinly's size format.
pub fn over_warning(p: &Provisioning) -> String {
    format!(
        "WARNING: the sum of all thin volume sizes ({}) exceeds the size of the pool's data \
         ({}): over-provisioned {:.2}:1. Writes fail or wait when the data is full: watch \
         Data% (thinly list), set a low water mark or auto-extend.",
        format_size(p.virtual_bytes),
        format_size(p.data_bytes),
        p.ratio()
    )
}

pub fn create(pool: &Pool, name: &str, size_bytes: u64) -> Guarded {
    let warnings = provisioning(pool, &pool.provisioning_with(name, size_bytes))?;
    pool.create_volume(name, size_bytes)?;
    Ok((status(pool, name)?, warnings))
}

pub fn snapshot(pool: &Pool, origin: &str, name: &str, read_only: bool) -> Guarded {
    let size = pool.volume(origin)?.size_bytes();
    let warnings = provisioning(pool, &pool.provisioning_with(name, size))?;
    pool.snapshot(origin, name, read_only)?;
    Ok((status(pool, name)?, warnings))
}

pub fn resize(pool: &Pool, name: &str, size_bytes: u64, force: bool) -> Guarded {
    if !force {
        pool.check_resize(name, size_bytes)?;
    }
    let warnings = provisioning(pool, &pool.provisioning_with(name, size_bytes))?;
    pool.resize_volume(name, size_bytes)?;
    Ok((status(pool, name)?, warnings))
}

pub fn delete(pool: &Pool, name: &str, force: bool, closer: Option<&ExportCloser>) -> Guarded {
    if !force {
        pool.check_delete(name)?;
    }
    let mut warnings = Vec::new();
    let snaps = pool.snapshots_of(name);
    if !snaps.is_empty() {
        warnings.push(format!(
            "WARNING: snapshot(s) {} now show their origin as deleted",
            snaps.join(", ")
        ));
    }
    if pool.open_count(name)? > 0 {
        if let Some(closer) = closer {
            match closer.close_export(name, CLOSE_TIMEOUT) {
                0 => warnings.push(format!("closed the NBD connections of {name}")),
                n => warnings.push(format!("WARNING: {n} connection(s) of {name} were cut")),
            }
        }
    }
    pool.delete_volume(name)?;
    Ok((Value::Null, warnings))
}
