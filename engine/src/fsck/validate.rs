//! Checks that a metadata stream describes a pool the kernel and `thin_check` accept
//! (spec §4.5, §6.4, §7), in one pass with memory bounded by the `<def>`s:
//! devices in ascending dev_id order below 2^24; per device, runs in ascending,
//! non-overlapping virtual order; data blocks below `nr_data_blocks` and 2^40; mapping
//! times and device times not after the pool's `time`; `creation_time <= snap_time`;
//! `mapped_blocks` equal to the number of mapped blocks.

use std::collections::HashMap;

use super::error::{Error, Result};
use super::ir::{Device, Metadata, MetadataVisitor, Run, Superblock};

/// Device ids are 24 bits in the kernel (spec §1, §9.23).
const MAX_DEV_ID: u32 = (1 << 24) - 1;
/// Mapping data block numbers are 40 bits (spec §9.9).
const DATA_BLOCK_LIMIT: u64 = 1 << 40;

/// The streaming checker; [`Metadata::validate`] runs it over an in-memory IR.
#[derive(Debug, Default)]
pub struct Validator {
    sb: Superblock,
    defs: HashMap<String, (u64, u64, u64)>, // name → (first origin, end origin, blocks)
    def: Option<(String, u64, u64, u64)>,
    device: Option<Device>,
    last_dev_id: Option<u32>,
    next_origin: u64,
    nr_mapped: u64,
    nr_mappings_total: u64,
    nr_devices: u64,
}

impl Validator {
    /// Mapped blocks seen over all devices so far (refs expanded).
    pub fn nr_mappings(&self) -> u64 {
        self.nr_mappings_total
    }

    /// Devices seen so far.
    pub fn nr_devices(&self) -> u64 {
        self.nr_devices
    }

    fn invalid<T>(&self, reason: String) -> Result<T> {
        Err(Error::Invalid { dev_id: self.device.map(|d| d.dev_id), reason })
    }

    fn check_run(&self, run: &Run) -> Result<()> {
        if run.len == 0 {
            return self.invalid(format!("run at virtual block {} has length 0", run.origin_begin));
        }
        let end_ok = run.origin_begin.checked_add(run.len).is_some();
        let data_end = run.data_begin.checked_add(run.len);
        if !end_ok || data_end.is_none() {
            return self.invalid(format!("run at virtual block {} overflows", run.origin_begin));
        }
        let data_end = data_end.unwrap_or(u64::MAX);
        if data_end > self.sb.nr_data_blocks || data_end > DATA_BLOCK_LIMIT {
            return self.invalid(format!(
                "virtual block {} maps data blocks up to {} beyond nr_data_blocks {}",
                run.origin_begin,
                data_end - 1,
                self.sb.nr_data_blocks
            ));
        }
        if run.time > self.sb.time {
            return self.invalid(format!(
                "virtual block {} has time {} after the pool time {}",
                run.origin_begin, run.time, self.sb.time
            ));
        }
        Ok(())
    }

    /// Accounts `[first, end)` holding `blocks` mapped blocks in the open device.
    fn advance(&mut self, first: u64, end: u64, blocks: u64) -> Result<()> {
        if first < self.next_origin {
            return self.invalid(format!("virtual block {first} is out of order or mapped twice"));
        }
        self.next_origin = end;
        self.nr_mapped += blocks;
        self.nr_mappings_total += blocks;
        Ok(())
    }
}

impl MetadataVisitor for Validator {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        if sb.nr_data_blocks > DATA_BLOCK_LIMIT {
            return self.invalid(format!("nr_data_blocks {} exceeds 2^40", sb.nr_data_blocks));
        }
        if sb.data_block_size == 0 {
            return self.invalid("data_block_size is 0".into());
        }
        self.sb = sb.clone();
        Ok(())
    }

    fn superblock_e(&mut self) -> Result<()> {
        Ok(())
    }

    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        if self.defs.len() as u64 >= super::MAX_DEF_RUNS {
            return self.invalid(format!("more than {} shared runs", super::MAX_DEF_RUNS));
        }
        self.def = Some((name.into(), u64::MAX, 0, 0));
        Ok(())
    }

    fn def_shared_e(&mut self) -> Result<()> {
        if let Some((name, first, end, blocks)) = self.def.take() {
            self.defs.insert(name, (first, end, blocks));
        }
        Ok(())
    }

    fn device_b(&mut self, device: &Device) -> Result<()> {
        self.device = Some(*device);
        if device.dev_id > MAX_DEV_ID {
            return self.invalid("dev_id is not below 2^24".into());
        }
        if self.last_dev_id.is_some_and(|last| last >= device.dev_id) {
            return self.invalid("devices are not in ascending dev_id order".into());
        }
        if device.creation_time > device.snap_time || device.snap_time > self.sb.time {
            return self.invalid(format!(
                "creation_time {} / snap_time {} inconsistent with the pool time {}",
                device.creation_time, device.snap_time, self.sb.time
            ));
        }
        self.last_dev_id = Some(device.dev_id);
        self.nr_devices += 1;
        self.next_origin = 0;
        self.nr_mapped = 0;
        Ok(())
    }

    fn device_e(&mut self) -> Result<()> {
        if let Some(dev) = self.device {
            if dev.mapped_blocks != self.nr_mapped {
                return self.invalid(format!(
                    "mapped_blocks is {} but {} blocks are mapped",
                    dev.mapped_blocks, self.nr_mapped
                ));
            }
        }
        self.device = None;
        Ok(())
    }

    fn map(&mut self, run: &Run) -> Result<()> {
        self.check_run(run)?;
        if let Some((_, first, end, blocks)) = &mut self.def {
            if run.origin_begin < *end {
                return self.invalid(format!("shared run out of order at {}", run.origin_begin));
            }
            *first = (*first).min(run.origin_begin);
            *end = run.origin_end();
            *blocks += run.len;
            return Ok(());
        }
        self.advance(run.origin_begin, run.origin_end(), run.len)
    }

    fn ref_shared(&mut self, name: &str) -> Result<()> {
        let Some(&(first, end, blocks)) = self.defs.get(name) else {
            return Err(Error::UndefinedRef { name: name.into() });
        };
        if blocks == 0 {
            return Ok(());
        }
        self.advance(first, end, blocks)
    }
}

impl Metadata {
    /// Checks the IR against the format (see the module documentation).
    pub fn validate(&self) -> Result<()> {
        self.walk(&mut Validator::default())
    }
}
