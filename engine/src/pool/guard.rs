//! Guardrails, as LVM has them around dm-thin: the checks a management command makes
//! before it shrinks, deletes or over-provisions, so that a slip of the keyboard costs a
//! message instead of data.
//!
//! - shrinking a volume discards everything past the new end: refused unless forced;
//! - deleting a volume a client has open (any `Volume` handle: an NBD connection, an
//!   attached device) or one that snapshots name as their origin: refused unless forced
//!   (the server closes the volume's connections before a forced delete);
//! - creating, snapshotting or growing volumes so that their virtual sizes add up to more
//!   than the pool's data: a warning with the over-provisioning ratio, or a refusal when
//!   the pool's `overprovision` setting is `error`.
//!
//! Each check only reads: a refused operation has changed nothing. The checks are the
//! callers' to make (the control requests make them); the pool's own operations and the
//! dm-thin messages (`Pool::message`) never do, since scripts written for the kernel
//! (Docker's devicemapper driver, LVM) rely on the kernel's behaviour.

use super::config::Overprovision;
use super::{Pool, PoolError, Result};
use std::sync::atomic::Ordering;

/// The pool's virtual sizes against its data, after a planned change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Provisioning {
    /// The sum of every volume's virtual size (snapshots included, as LVM counts them).
    pub virtual_bytes: u64,
    /// The data device's size.
    pub data_bytes: u64,
}

impl Provisioning {
    /// Virtual bytes per byte of data.
    pub fn ratio(&self) -> f64 {
        self.virtual_bytes as f64 / self.data_bytes.max(1) as f64
    }

    pub fn is_over(&self) -> bool {
        self.virtual_bytes > self.data_bytes
    }

    /// LVM's kind of warning, when over-provisioned.
    pub fn warning(&self) -> Option<String> {
        self.is_over().then(|| {
            format!(
                "WARNING: the thin volumes' sizes add up to {} bytes, more than the pool's {} \
                 bytes of data (over-provisioned {:.2}:1); writes fail or queue when the \
                 data is full (see the low water mark and auto-extend)",
                self.virtual_bytes,
                self.data_bytes,
                self.ratio()
            )
        })
    }
}

impl Pool {
    /// The provisioning after volume `name` gets virtual size `new_size_bytes` (a new
    /// volume, or a resize of an existing one).
    pub fn provisioning_with(&self, name: &str, new_size_bytes: u64) -> Provisioning {
        let meta = self.inner.meta();
        let others: u64 = meta
            .config
            .volumes
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, v)| v.size_bytes)
            .fold(0, u64::saturating_add);
        Provisioning {
            virtual_bytes: others.saturating_add(new_size_bytes),
            data_bytes: meta.md.nr_data_blocks().saturating_mul(self.inner.block_size),
        }
    }

    /// Refuses `p` if it over-provisions and the pool's setting says that is an error;
    /// else returns the warning to show, if any.
    pub fn check_provisioning(&self, p: &Provisioning) -> Result<Option<String>> {
        let warning = p.warning();
        match (warning, self.settings().overprovision) {
            (Some(w), Overprovision::Error) => Err(PoolError::Refused(format!(
                "{} and the pool's overprovision setting is \"error\"",
                w.trim_start_matches("WARNING: ")
            ))),
            (w, _) => Ok(w),
        }
    }

    /// Refuses to shrink volume `name` below its size (unless the caller was told to force).
    pub fn check_resize(&self, name: &str, size_bytes: u64) -> Result<()> {
        let now = self.state_of(name)?.size_bytes.load(Ordering::SeqCst);
        if size_bytes < now {
            return Err(PoolError::Refused(format!(
                "shrinking volume {name} from {now} to {size_bytes} bytes discards the data \
                 past the new end; use --force to shrink it"
            )));
        }
        Ok(())
    }

    /// How many handles (clients) have volume `name` open.
    pub fn open_count(&self, name: &str) -> Result<usize> {
        Ok(self.state_of(name)?.handles.load(Ordering::SeqCst))
    }

    /// The volumes that name `name` as their origin.
    pub fn snapshots_of(&self, name: &str) -> Vec<String> {
        let meta = self.inner.meta();
        let vols = meta.config.volumes.iter();
        vols.filter(|(_, v)| !v.origin_deleted && v.snapshot_of.as_deref() == Some(name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Refuses to delete volume `name` while a client has it open or snapshots name it as
    /// their origin.
    pub fn check_delete(&self, name: &str) -> Result<()> {
        let open = self.open_count(name)?;
        if open > 0 {
            return Err(PoolError::Refused(format!(
                "volume {name} is open ({open} client connection(s) or attached device(s)); \
                 use --force to close them and delete it"
            )));
        }
        let snaps = self.snapshots_of(name);
        if !snaps.is_empty() {
            return Err(PoolError::Refused(format!(
                "volume {name} is the origin of snapshot(s) {} (they keep their data; they \
                 would show their origin as deleted); use --force to delete it",
                snaps.join(", ")
            )));
        }
        Ok(())
    }
}
