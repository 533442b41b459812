//! Power cuts during thin-metadata commits (device create/snapshot/delete, mapping changes,
//! metadata snapshots): the reopened metadata is the last commit or the new one, and the
//! internal checker is clean. Seeds replay with THINLY_SEED=N.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, CrashPlan, FaultyDevice};
use thinly_engine::thin::{check, CheckOptions, OpenOptions, ThinMetadata};
use thinly_engine::{DevId, VirtBlock};

type ThinModel = BTreeMap<u64, BTreeMap<u64, u64>>;

fn read_model(md: &mut ThinMetadata) -> ThinModel {
    let mut out = ThinModel::new();
    for id in md.device_ids() {
        let m = out.entry(id.0).or_default();
        md.for_each_mapping(id, VirtBlock(0), VirtBlock(u64::MAX), &mut |v, mp| {
            m.insert(v.0, mp.data_block.0);
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    }
    out
}

fn mutate(md: &mut ThinMetadata, rng: &mut Rng, next_id: &mut u64) {
    for _ in 0..6 {
        let ids = md.device_ids();
        if ids.is_empty() || rng.chance(10) {
            md.create_thin(DevId(*next_id)).unwrap();
            *next_id += 1;
            continue;
        }
        let id = ids[rng.below(ids.len() as u64) as usize];
        match rng.below(10) {
            0 | 1 => {
                md.create_snap(DevId(*next_id), id).unwrap();
                *next_id += 1;
            }
            2 if ids.len() > 1 => md.delete(id).unwrap(),
            3 => {
                let s = rng.below(2000);
                md.remove_range(id, VirtBlock(s), VirtBlock(s + rng.below(200))).unwrap();
            }
            _ => {
                let s = rng.below(2000);
                for v in s..s + rng.below(150) {
                    let m = md.lookup(id, VirtBlock(v)).unwrap();
                    if m.is_none_or(|m| m.maybe_shared) {
                        let b = md.alloc_data_block().unwrap();
                        md.insert_mapping(id, VirtBlock(v), b).unwrap();
                    }
                }
            }
        }
    }
}

fn crash_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut dev = Arc::new(FaultyDevice::new(4096));
    let mut md = ThinMetadata::format(dev.clone(), 128, 50_000, 1 << 20).unwrap();
    let mut committed = ThinModel::new();
    let mut next_id = 0;
    for round in 0..5 {
        mutate(&mut md, &mut rng, &mut next_id);
        let want = read_model(&mut md);
        if rng.chance(30) {
            dev.fail_flushes_after(rng.below(2));
        } else {
            dev.fail_writes_after(rng.below(80));
        }
        // Either a plain commit or a metadata-snapshot operation (two commits).
        let ok = if rng.chance(20) {
            let r = if md.held_snapshot().unwrap().is_some() {
                md.release_metadata_snap()
            } else {
                md.reserve_metadata_snap().map(drop)
            };
            r.is_ok()
        } else {
            md.commit().is_ok()
        };
        dev.heal();
        let image = dev.crash_image(CrashPlan::Random { seed: rng.next() });
        drop(md);
        dev = Arc::new(FaultyDevice::from_image(&image));
        let d: Arc<dyn BlockDevice> = dev.clone();
        md = ThinMetadata::open(d.clone(), OpenOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let found = read_model(&mut md);
        if ok {
            assert_eq!(found, want, "round {round}: a completed commit was lost");
        } else {
            assert!(
                found == want || found == committed,
                "round {round}: neither old nor new state"
            );
        }
        let report = check(d, CheckOptions::default()).unwrap();
        assert!(report.is_clean(), "round {round}: {:#?}", report.problems);
        committed = found;
        next_id = md.device_ids().last().map_or(0, |d| d.0 + 1).max(next_id);
    }
}

#[test]
fn a_power_cut_during_a_thin_commit_reopens_at_the_old_or_the_new_commit() {
    // 40 seeds for CI; THINLY_LONG_SWEEPS=1 runs 400.
    for_each_seed(40, crash_case);
}
