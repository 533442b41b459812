//! The device-mapper tables of a thinly pool, and scripts that load them.
//!
//! The kernel keeps outside its metadata what thinly keeps in `pool.json`: the data block
//! size and low water mark go into the `thin-pool` table, each volume's device id and size
//! into a `thin` table. [`Activation::from_pool_dir`] reads both from a pool directory (read
//! only); a pool without `pool.json` (one the kernel made) gets a device `thin<ID>` per thin
//! device, sized as `Pool::open` would size it.
//!
//! The pool target's length is `nr_data_blocks × data_block_size` from the metadata, not the
//! data file's size: a larger data device would make the kernel grow the pool (and commit).

use super::{disk_serial, sh_quote};
use crate::error::{Error, Result};
use crate::io::{BlockDevice, FileDevice};
use crate::pool::config::{ConfigStore, DirConfigStore};
use crate::pool::OutOfSpacePolicy;
use crate::thin::{OpenOptions, ThinMetadata};
use std::path::Path;
use std::sync::Arc;

/// The files of a pool directory (as `Pool::create` names them).
pub const METADATA_FILE: &str = "metadata";
pub const DATA_FILE: &str = "data";

/// The `thin-pool` target of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTable {
    /// The device-mapper name of the pool device.
    pub name: String,
    pub nr_data_blocks: u64,
    pub block_sectors: u32,
    pub low_water_mark_blocks: u64,
    /// Feature arguments (`skip_block_zeroing`, `error_if_no_space`).
    pub features: Vec<String>,
}

impl PoolTable {
    pub fn data_sectors(&self) -> u64 {
        self.nr_data_blocks * self.block_sectors as u64
    }

    /// `0 SECTORS thin-pool META DATA BLOCKSECTORS LOWWATER [N FEATURES…]`.
    pub fn table(&self, meta_dev: &str, data_dev: &str) -> String {
        let mut t = format!(
            "0 {} thin-pool {meta_dev} {data_dev} {} {}",
            self.data_sectors(),
            self.block_sectors,
            self.low_water_mark_blocks
        );
        if !self.features.is_empty() {
            t.push_str(&format!(" {} {}", self.features.len(), self.features.join(" ")));
        }
        t
    }
}

/// The `thin` target of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinTable {
    /// The device-mapper name (the volume's name, after an optional prefix).
    pub name: String,
    pub volume: String,
    pub dev_id: u64,
    pub sectors: u64,
    pub read_only: bool,
}

impl ThinTable {
    /// `0 SECTORS thin /dev/mapper/POOL DEVID`.
    pub fn table(&self, pool_name: &str) -> String {
        format!("0 {} thin /dev/mapper/{pool_name} {}", self.sectors, self.dev_id)
    }
}

/// Everything needed to activate a pool under the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub pool: PoolTable,
    pub thins: Vec<ThinTable>,
    /// Thin devices in the metadata that pool.json names with a size that is not a whole
    /// number of sectors, or other things a reader should know (printed as comments).
    pub notes: Vec<String>,
}

/// Options of [`Activation::from_pool_dir`].
#[derive(Debug, Clone, Default)]
pub struct ActivationOptions {
    /// The pool device's name (default: the pool directory's base name).
    pub pool_name: Option<String>,
    /// Put before every thin device's name (e.g. "pool-").
    pub thin_prefix: String,
}

impl Activation {
    /// Reads the metadata superblock and device list (read-only) and `pool.json`, if any.
    pub fn from_pool_dir(dir: &Path, opts: &ActivationOptions) -> Result<Activation> {
        let paths = crate::pool::DevicePaths::of_pool(dir)
            .map_err(|e| Error::Invalid(format!("reading pool.json in {}: {e}", dir.display())))?;
        let meta_path = paths.metadata;
        let dev: Arc<dyn BlockDevice> = Arc::new(
            FileDevice::open(&meta_path, true)
                .map_err(|e| Error::io(format!("opening {}", meta_path.display()), e))?,
        );
        let mut md =
            ThinMetadata::open(dev, OpenOptions { read_only: true, ..Default::default() })?;
        let config = DirConfigStore::new(dir)
            .load()
            .map_err(|e| Error::io(format!("reading pool.json in {}", dir.display()), e))?;
        let block_sectors = md.data_block_size_sectors();
        let bs = block_sectors as u64 * 512;
        let name = opts.pool_name.clone().unwrap_or_else(|| {
            let base = std::fs::canonicalize(dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "pool".into());
            dm_name(&base)
        });
        let mut features = Vec::new();
        let (lwm, mut notes) =
            (config.as_ref().map_or(0, |c| c.settings.low_water_mark_blocks), Vec::new());
        if let Some(c) = &config {
            if !c.settings.zeroing {
                features.push("skip_block_zeroing".to_string());
            }
            if c.settings.out_of_space == OutOfSpacePolicy::Error {
                features.push("error_if_no_space".to_string());
            }
        } else {
            notes.push("no pool.json: thin devices are named thin<ID>".to_string());
        }
        let ids = md.device_ids();
        let mut thins = Vec::new();
        if let Some(c) = &config {
            for (vol, v) in &c.volumes {
                if !ids.iter().any(|d| d.0 == v.dev_id) {
                    notes.push(format!("volume {vol}: device {} is not in the metadata", v.dev_id));
                    continue;
                }
                thins.push(ThinTable {
                    name: format!("{}{}", opts.thin_prefix, dm_name(vol)),
                    volume: vol.clone(),
                    dev_id: v.dev_id,
                    sectors: v.size_bytes.div_ceil(512),
                    read_only: v.read_only,
                });
            }
        }
        for id in ids {
            if thins.iter().any(|t| t.dev_id == id.0) {
                continue;
            }
            let blocks = md.highest_mapped(id)?.map_or(0, |b| b.0 + 1).max(md.nr_data_blocks());
            let vol = format!("thin{}", id.0);
            thins.push(ThinTable {
                name: format!("{}{vol}", opts.thin_prefix),
                volume: vol,
                dev_id: id.0,
                sectors: blocks * bs / 512,
                read_only: false,
            });
        }
        thins.sort_by_key(|t| t.dev_id);
        let pool = PoolTable {
            name,
            nr_data_blocks: md.nr_data_blocks(),
            block_sectors,
            low_water_mark_blocks: lwm,
            features,
        };
        Ok(Activation { pool, thins, notes })
    }

    fn header(&self, out: &mut String, how: &str) {
        out.push_str(&format!(
            "# Activates thinly pool {:?} under the kernel's dm-thin ({how}).\n\
             # Generated by `thinly kernel-script`. The pool must not be open in thinly meanwhile\n\
             # (`thinly serve` holds it); the kernel ignores thinly's lock.\n\
             # {} data blocks of {} sectors; data device at least {} bytes.\n",
            self.pool.name,
            self.pool.nr_data_blocks,
            self.pool.block_sectors,
            self.pool.data_sectors() * 512
        ));
        for n in &self.notes {
            out.push_str(&format!("# note: {n}\n"));
        }
    }

    fn create_lines(&self, meta: &str, data: &str, indent: &str) -> String {
        let mut out = format!(
            "{indent}dmsetup create {} --table \"{}\"\n",
            sh_quote(&self.pool.name),
            self.pool.table(meta, data)
        );
        for t in &self.thins {
            out.push_str(&format!(
                "{indent}dmsetup create {}{} --table \"{}\"    # volume {}\n",
                if t.read_only { "--readonly " } else { "" },
                sh_quote(&t.name),
                t.table(&self.pool.name),
                t.volume
            ));
        }
        out
    }

    fn remove_lines(&self, indent: &str) -> String {
        let mut out = String::new();
        for t in self.thins.iter().rev() {
            out.push_str(&format!("{indent}dmsetup remove {}\n", sh_quote(&t.name)));
        }
        out.push_str(&format!("{indent}dmsetup remove {}\n", sh_quote(&self.pool.name)));
        out
    }

    /// A script for a machine with device-mapper: loop devices for the two files, then the
    /// tables; the teardown commands follow as comments.
    pub fn host_script(&self, meta_path: &Path, data_path: &Path) -> String {
        let mut out = String::from("#!/bin/sh\n");
        self.header(&mut out, "losetup + dmsetup, as root");
        let (m, d) = (meta_path.display().to_string(), data_path.display().to_string());
        out.push_str("set -eu\n");
        // A block device (a pool made with --data/--metadata) is used as it is; a file
        // goes through a loop device.
        let is_dev = |p: &Path| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
        };
        let size_of = if is_dev(data_path) { "blockdev --getsize64" } else { "stat -c %s" };
        out.push_str(&format!(
            "[ \"$({size_of} {})\" -ge {} ] || {{ echo \"the data device is smaller than the metadata says\" >&2; exit 1; }}\n",
            sh_quote(&d),
            self.pool.data_sectors() * 512
        ));
        for (var, path, text) in [("META", meta_path, &m), ("DATA", data_path, &d)] {
            if is_dev(path) {
                out.push_str(&format!("{var}={}\n", sh_quote(text)));
            } else {
                out.push_str(&format!("{var}=$(losetup --find --show {})\n", sh_quote(text)));
            }
        }
        out.push_str(&self.create_lines("$META", "$DATA", ""));
        out.push_str("echo \"pool $(dmsetup status ");
        out.push_str(&sh_quote(&self.pool.name));
        out.push_str(")\"\n# To deactivate (then thinly may open the pool again):\n");
        for l in self.remove_lines("").lines() {
            out.push_str(&format!("#   {l}\n"));
        }
        let loops: Vec<&str> = [("$META", meta_path), ("$DATA", data_path)]
            .into_iter()
            .filter(|(_, p)| !is_dev(p))
            .map(|(v, _)| v)
            .collect();
        if !loops.is_empty() {
            out.push_str(&format!("#   losetup -d {}\n", loops.join(" ")));
        }
        out
    }

    /// A script for the kernel lab's guest, to be sourced: finds the two disks by serial
    /// (QEMU's serial of `-d FILE`) and defines `pool_activate`, `pool_deactivate`, and
    /// `POOL_NAME`, `THIN_NAMES`, `THIN_IDS`, `THIN_SECTORS`, `META`, `DATA`.
    pub fn guest_script(&self, meta_file_name: &str, data_file_name: &str) -> String {
        let mut out = String::new();
        self.header(&mut out, "in the kernel lab guest; source it");
        out.push_str(
            "disk_by_serial() {\n  for b in /sys/block/vd*; do\n    \
             [ \"$(cat \"$b/serial\" 2>/dev/null)\" = \"$1\" ] && { echo \"/dev/${b##*/}\"; return 0; }\n  \
             done\n  echo \"no disk with serial $1\" >&2; return 1\n}\n",
        );
        out.push_str(&format!(
            "META=$(disk_by_serial {})\n",
            sh_quote(&disk_serial(meta_file_name))
        ));
        out.push_str(&format!(
            "DATA=$(disk_by_serial {})\n",
            sh_quote(&disk_serial(data_file_name))
        ));
        out.push_str(&format!("POOL_NAME={}\n", sh_quote(&self.pool.name)));
        let names: Vec<String> = self.thins.iter().map(|t| t.name.clone()).collect();
        let ids: Vec<String> = self.thins.iter().map(|t| t.dev_id.to_string()).collect();
        let secs: Vec<String> = self.thins.iter().map(|t| t.sectors.to_string()).collect();
        out.push_str(&format!("THIN_NAMES={}\n", sh_quote(&names.join(" "))));
        out.push_str(&format!("THIN_IDS={}\n", sh_quote(&ids.join(" "))));
        out.push_str(&format!("THIN_SECTORS={}\n", sh_quote(&secs.join(" "))));
        out.push_str(&format!(
            "pool_activate() {{\n  [ \"$(blockdev --getsz \"$DATA\")\" -ge {} ] || {{ echo \"data disk too small\" >&2; return 1; }}\n",
            self.pool.data_sectors()
        ));
        out.push_str(&self.create_lines("$META", "$DATA", "  "));
        out.push_str("}\npool_deactivate() {\n");
        out.push_str(&self.remove_lines("  "));
        out.push_str("}\n");
        out
    }
}

/// A device-mapper name: no '/', at most 127 bytes.
fn dm_name(s: &str) -> String {
    let mut n: String =
        s.chars().map(|c| if c == '/' || c.is_whitespace() { '_' } else { c }).collect();
    n.truncate(127);
    if n.is_empty() {
        n.push_str("pool");
    }
    n
}
