//! Metadata written by the real `thin_restore` opens in thinly with exactly the XML's
//! mappings and details: a generated corpus with many devices, snapshot chains deeper than
//! 100, range and single mappings, data blocks shared across devices, > 100k mappings.
//! And a held metadata snapshot (in `generated.bin`) reads as the real `thin_dump -m` shows.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;
use thinly_engine::fsck::gen::{generate, GenConfig};
use thinly_engine::fsck::{to_xml_string, Dialect, Metadata};
use thinly_engine::io::{BlockDevice, FileDevice};
use thinly_engine::thin::{OpenOptions, ThinMetadata};
use thinly_engine::{DevId, VirtBlock};

type Maps = BTreeMap<u64, BTreeMap<u64, (u64, u32)>>;

fn xml_mappings(md: &Metadata) -> Maps {
    let md = md.normalised().unwrap();
    md.devices
        .iter()
        .map(|d| {
            let mut m = BTreeMap::new();
            for item in &d.items {
                let r = item.run().unwrap();
                for i in 0..r.len {
                    m.insert(r.origin_begin + i, (r.data_begin + i, r.time));
                }
            }
            (d.details.dev_id as u64, m)
        })
        .collect()
}

fn thinly_mappings(md: &mut ThinMetadata) -> Maps {
    let mut out = Maps::new();
    for id in md.device_ids() {
        let m = out.entry(id.0).or_default();
        md.for_each_mapping(id, VirtBlock(0), VirtBlock(u64::MAX), &mut |v, mp| {
            m.insert(v.0, (mp.data_block.0, mp.time));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    }
    out
}

fn restore_and_compare(name: &str, cfg: &GenConfig) {
    let Some(thin_restore) = real_tool("thin_restore") else { return };
    let want = generate(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("pool.xml");
    let meta = dir.path().join("metadata");
    std::fs::write(&xml_path, to_xml_string(&want, Dialect::V09).unwrap()).unwrap();
    let nr = want.nr_mappings();
    let size = (64u64 << 20).max(nr * 64);
    std::fs::File::create(&meta).unwrap().set_len(size).unwrap();
    let (rc, out, err) =
        run_tool(&thin_restore, &["-i", xml_path.to_str().unwrap(), "-o", meta.to_str().unwrap()]);
    assert_eq!(rc, 0, "{name}: thin_restore failed: {out}{err}");
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&meta, true).unwrap());
    let mut md =
        ThinMetadata::open(dev, OpenOptions { read_only: true, ..Default::default() }).unwrap();
    assert_eq!(md.time(), want.superblock.time, "{name}");
    assert_eq!(md.transaction_id(), want.superblock.transaction, "{name}");
    assert_eq!(md.nr_data_blocks(), want.superblock.nr_data_blocks, "{name}");
    for d in &want.devices {
        let got = md.device_details(DevId(d.details.dev_id as u64)).unwrap();
        assert_eq!(
            (got.mapped_blocks, got.transaction_id, got.creation_time, got.snapshotted_time),
            (
                d.details.mapped_blocks,
                d.details.transaction,
                d.details.creation_time,
                d.details.snap_time
            ),
            "{name}: details of device {}",
            d.details.dev_id
        );
    }
    let got = thinly_mappings(&mut md);
    assert_eq!(got.len(), want.devices.len(), "{name}: device count");
    assert_eq!(got, xml_mappings(&want), "{name}: mappings");
    eprintln!("{name}: {} devices, {nr} mappings read back exactly", want.devices.len());
}

#[test]
fn small_pools_restored_by_the_real_tool_read_back_exactly() {
    for seed in 1..=4 {
        restore_and_compare(&format!("small({seed})"), &GenConfig::small(seed));
    }
}

#[test]
fn many_devices_restored_by_the_real_tool_read_back_exactly() {
    let cfg =
        GenConfig { nr_origins: 150, chain_depth: 20, nr_branch_snaps: 150, ..GenConfig::small(9) };
    restore_and_compare("many devices", &cfg);
}

#[test]
fn a_snapshot_chain_deeper_than_100_with_100k_mappings_reads_back_exactly() {
    let cfg = GenConfig::deep_chain(3);
    assert!(generate(&cfg).unwrap().nr_mappings() > 100_000);
    restore_and_compare("deep chain", &cfg);
}

#[test]
fn a_held_metadata_snapshot_reads_as_the_real_thin_dump_m_shows() {
    let Some(thin_dump) = real_tool("thin_dump") else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generated.bin");
    let f = std::fs::File::open(common::sample("generated.bin.gz")).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let (rc, out, err) = run_tool(&thin_dump, &["-m", path.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let want = parse_dump(&out);
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path, true).unwrap());
    let mut md =
        ThinMetadata::open(dev, OpenOptions { read_only: true, ..Default::default() }).unwrap();
    let h = md.held_snapshot().unwrap().expect("generated.bin holds a metadata snapshot");
    let devs = md.snapshot_devices(&h).unwrap();
    assert_eq!(
        devs.keys().map(|d| d.0).collect::<Vec<_>>(),
        want.devices.keys().copied().collect::<Vec<_>>()
    );
    for (id, d) in &want.devices {
        let got: BTreeMap<u64, (u64, u32)> = md
            .snapshot_mappings(&h, DevId(*id))
            .unwrap()
            .into_iter()
            .map(|(v, b, t)| (v.0, (b.0, t)))
            .collect();
        assert_eq!(&got, &d.mappings, "held snapshot device {id}");
        assert_eq!(devs[&DevId(*id)].mapped_blocks, d.mapped_blocks);
    }
}
