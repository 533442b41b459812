//! A deterministic, seeded generator of valid pools as a metadata event stream, for
//! tests and benchmarks of dump/restore/check.
//!
//! The pool is simulated the way the kernel builds one (spec §6.3, §6.4):
//! - origins are created at time 0 and written (ranges and single blocks);
//! - a snapshot increments the pool `time`, gets `creation_time = snap_time = time`, sets
//!   its origin's `snap_time = time`, and sees exactly the origin's mappings at that
//!   moment (same data blocks: sharing);
//! - writes after a snapshot go to fresh data blocks at the current time (breaking
//!   sharing) in the snapshot and, sometimes, in its origin, so the two diverge;
//! - a deep chain snapshots the previous snapshot again and again; branch snapshots pick
//!   a random device.
//!
//! Each write batch ("layer") is kept as runs; a device's mappings are its ancestors'
//! layers older than the snapshot that separates them, overlaid by time. Memory holds
//! all layers plus one device's view at a time, never the whole output, so corpora of
//! millions of mappings stream straight into a writer.
//! Invariants of the output (checked by [`Validator`](super::Validator) in the tests):
//! ascending dev_ids and virtual blocks, `mapped_blocks` exact, every mapping time
//! ≤ its device's `snap_time` ≤ pool `time` = number of snapshots, data blocks
//! < `nr_data_blocks`.

use std::collections::BTreeMap;

use super::error::Result;
use super::ir::{Device, Metadata, MetadataVisitor, Run, Superblock};
use super::stream::{Coalesce, MetadataBuilder};

/// What to generate. Every field is a knob; the constructors are the tested corpora.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    pub seed: u64,
    /// Thin devices created at time 0 and written before any snapshot.
    pub nr_origins: u32,
    /// Snapshots in the chain (each of the previous one, starting at origin 0).
    pub chain_depth: u32,
    /// Extra snapshots of randomly chosen devices, spread along the chain.
    pub nr_branch_snaps: u32,
    /// Virtual size of every device, in blocks.
    pub virt_blocks: u64,
    /// Blocks each origin maps initially (approximately).
    pub origin_blocks: u64,
    /// Blocks written to each new snapshot (and, every other time, to its origin).
    pub writes_per_snapshot: u64,
    /// Longest run written at once.
    pub max_run: u64,
    pub data_block_size: u32,
}

impl GenConfig {
    /// A few devices, a short chain: quick to restore.
    pub fn small(seed: u64) -> Self {
        GenConfig {
            seed,
            nr_origins: 3,
            chain_depth: 5,
            nr_branch_snaps: 3,
            virt_blocks: 2_000,
            origin_blocks: 400,
            writes_per_snapshot: 30,
            max_run: 40,
            data_block_size: 128,
        }
    }

    /// A chain of 110 snapshots, > 100 000 mappings in all.
    pub fn deep_chain(seed: u64) -> Self {
        GenConfig {
            nr_origins: 2,
            chain_depth: 110,
            nr_branch_snaps: 8,
            virt_blocks: 4_000,
            origin_blocks: 1_000,
            writes_per_snapshot: 16,
            ..GenConfig::small(seed)
        }
    }

    /// More than 1 000 000 mappings over a few dozen devices.
    pub fn large(seed: u64) -> Self {
        GenConfig {
            nr_origins: 4,
            chain_depth: 20,
            nr_branch_snaps: 4,
            virt_blocks: 200_000,
            origin_blocks: 50_000,
            writes_per_snapshot: 500,
            max_run: 64,
            ..GenConfig::small(seed)
        }
    }
}

/// SplitMix64: tiny, seedable, good enough to spread blocks around.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone)]
struct PlannedDevice {
    details: Device,
    parent: Option<usize>,
}

/// One write batch: runs of one device at one time, ascending and disjoint.
#[derive(Debug, Clone)]
struct Layer {
    device: usize,
    time: u32,
    runs: Vec<Run>,
}

/// The simulated pool before emission.
#[derive(Debug)]
struct Plan {
    devices: Vec<PlannedDevice>,
    layers: Vec<Layer>,
    time: u32,
    transaction: u64,
    next_data: u64,
}

impl Plan {
    fn create(&mut self, parent: Option<usize>) -> usize {
        self.transaction += 1;
        if let Some(p) = parent {
            self.time += 1;
            self.devices[p].details.snap_time = self.time;
        }
        let dev_id = self.devices.len() as u32;
        self.devices.push(PlannedDevice {
            details: Device {
                dev_id,
                mapped_blocks: 0,
                transaction: self.transaction,
                creation_time: self.time,
                snap_time: self.time,
            },
            parent,
        });
        self.devices.len() - 1
    }

    /// Writes about `nr_blocks` blocks in random runs to `device` at the current time,
    /// each run to fresh data blocks.
    fn write(&mut self, rng: &mut Rng, cfg: &GenConfig, device: usize, nr_blocks: u64) {
        let density = (nr_blocks as f64 / cfg.virt_blocks as f64).clamp(1e-6, 1.0);
        let mean_len = (1 + cfg.max_run) as f64 / 2.0;
        let mean_gap = mean_len * (1.0 - density) / density;
        let mut runs = Vec::new();
        let (mut pos, mut written) = (rng.below(mean_gap as u64 + 1), 0);
        while written < nr_blocks && pos < cfg.virt_blocks {
            // About a third single blocks, the rest ranges.
            let len = match rng.below(3) {
                0 => 1,
                _ => 2 + rng.below(cfg.max_run.max(2) - 1),
            }
            .min(cfg.virt_blocks - pos);
            runs.push(Run { origin_begin: pos, data_begin: self.next_data, len, time: self.time });
            // Leave a hole in the data device now and then so neighbours do not merge.
            self.next_data += len + rng.below(2);
            written += len;
            pos += len + 1 + rng.below(2 * mean_gap as u64 + 1);
        }
        self.layers.push(Layer { device, time: self.time, runs });
    }

    /// The mappings `device` sees, as disjoint runs keyed by first virtual block.
    fn view(&self, device: usize) -> BTreeMap<u64, Run> {
        // (ancestor, layers of it strictly older than this time are visible)
        let mut path = Vec::new();
        let (mut cur, mut limit) = (Some(device), u32::MAX);
        while let Some(d) = cur {
            path.push((d, limit));
            limit = self.devices[d].details.creation_time;
            cur = self.devices[d].parent;
        }
        let mut visible: Vec<&Layer> = self
            .layers
            .iter()
            .filter(|l| path.iter().any(|&(d, lim)| l.device == d && l.time < lim))
            .collect();
        visible.sort_by_key(|l| l.time);
        let mut view = BTreeMap::new();
        for layer in visible {
            for run in &layer.runs {
                paint(&mut view, *run);
            }
        }
        view
    }
}

/// Overlays `run` on `view`, cutting whatever it covers.
fn paint(view: &mut BTreeMap<u64, Run>, run: Run) {
    let (start, end) = (run.origin_begin, run.origin_end());
    let tail_of = |p: &Run| Run {
        origin_begin: end,
        data_begin: p.data_begin + (end - p.origin_begin),
        len: p.origin_end() - end,
        time: p.time,
    };
    if let Some((_, before)) = view.range_mut(..start).next_back() {
        let old = *before;
        if old.origin_end() > start {
            before.len = start - old.origin_begin;
            if old.origin_end() > end {
                view.insert(end, tail_of(&old));
            }
        }
    }
    let covered: Vec<u64> = view.range(start..end).map(|(&k, _)| k).collect();
    for k in covered {
        if let Some(old) = view.remove(&k) {
            if old.origin_end() > end {
                view.insert(end, tail_of(&old));
            }
        }
    }
    view.insert(start, run);
}

fn simulate(cfg: &GenConfig) -> Plan {
    let mut rng = Rng(cfg.seed);
    let mut plan =
        Plan { devices: Vec::new(), layers: Vec::new(), time: 0, transaction: 0, next_data: 0 };
    for _ in 0..cfg.nr_origins.max(1) {
        let d = plan.create(None);
        plan.write(&mut rng, cfg, d, cfg.origin_blocks);
    }
    let branch_every = (cfg.chain_depth / (cfg.nr_branch_snaps + 1)).max(1);
    let mut branches_left = cfg.nr_branch_snaps;
    let mut head = 0;
    for step in 0..cfg.chain_depth.max(cfg.nr_branch_snaps) {
        let branch = branches_left > 0 && (step + 1) % branch_every == 0;
        if step < cfg.chain_depth {
            let origin = head;
            head = plan.create(Some(origin));
            plan.write(&mut rng, cfg, head, cfg.writes_per_snapshot);
            if step % 2 == 0 {
                plan.write(&mut rng, cfg, origin, cfg.writes_per_snapshot / 2 + 1);
            }
        }
        if branch || step >= cfg.chain_depth {
            branches_left = branches_left.saturating_sub(1);
            let origin = rng.below(plan.devices.len() as u64) as usize;
            let snap = plan.create(Some(origin));
            plan.write(&mut rng, cfg, snap, cfg.writes_per_snapshot);
        }
    }
    plan
}

/// Streams the generated pool into `visitor` (runs coalesced as the dumpers print them),
/// ending with `eof`.
pub fn generate_into<V: MetadataVisitor>(cfg: &GenConfig, visitor: V) -> Result<()> {
    let plan = simulate(cfg);
    let mut v = Coalesce::new(visitor);
    v.superblock_b(&Superblock {
        uuid: String::new(),
        time: plan.time,
        transaction: plan.transaction,
        flags: Some(0),
        version: Some(2),
        data_block_size: cfg.data_block_size,
        // Some free space beyond the last allocation, as a real pool would have.
        nr_data_blocks: (plan.next_data + 1024).next_multiple_of(1024),
        metadata_snap: None,
    })?;
    for (i, dev) in plan.devices.iter().enumerate() {
        let view = plan.view(i);
        let details = Device { mapped_blocks: view.values().map(|r| r.len).sum(), ..dev.details };
        v.device_b(&details)?;
        for run in view.values() {
            v.map(run)?;
        }
        v.device_e()?;
    }
    v.superblock_e()?;
    v.eof()
}

/// The generated pool in memory.
pub fn generate(cfg: &GenConfig) -> Result<Metadata> {
    let mut builder = MetadataBuilder::default();
    generate_into(cfg, &mut builder)?;
    builder.finish()
}
