use crate::fsck::gen::{generate, generate_into, GenConfig};
use crate::fsck::validate::Validator;
use crate::fsck::xml::{dump_writer, parse_xml, read_xml, to_xml_string, Dialect};

#[test]
fn generation_is_deterministic_per_seed() {
    let a = generate(&GenConfig::small(7)).expect("gen");
    assert_eq!(a, generate(&GenConfig::small(7)).expect("gen"));
    assert_ne!(a, generate(&GenConfig::small(8)).expect("gen"));
}

#[test]
fn generated_pools_are_valid_and_share_data_blocks_between_snapshots() {
    for seed in 0..5 {
        let md = generate(&GenConfig::small(seed)).expect("gen");
        md.validate().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for dev in &md.devices {
            let latest = dev.items.iter().filter_map(|i| i.run()).map(|r| r.time).max();
            assert!(latest.unwrap_or(0) <= dev.details.snap_time, "seed {seed}");
        }
        let nr_snaps = md.devices.iter().filter(|d| d.details.creation_time > 0).count();
        assert_eq!(md.superblock.time as usize, nr_snaps, "sb time counts snapshots");
        let data = |i: usize| -> std::collections::HashSet<u64> {
            md.devices[i]
                .items
                .iter()
                .filter_map(|it| it.run())
                .flat_map(|r| r.data_begin..r.data_end())
                .collect()
        };
        // Device 3, the first snapshot (of origin 0), shares data blocks with it but has
        // diverged.
        let (origin, snap) = (data(0), data(3));
        let shared = origin.intersection(&snap).count();
        assert!(shared > 0 && origin != snap, "seed {seed}: {shared} shared");
        // Both single and range mappings occur, and the XML round-trips.
        let xml = to_xml_string(&md, Dialect::V09).expect("write");
        assert!(xml.contains("<single_mapping") && xml.contains("<range_mapping"));
        assert_eq!(parse_xml(xml.as_bytes()).expect("parse"), md);
    }
}

#[test]
fn deep_chain_has_more_than_a_hundred_snapshots_and_a_hundred_thousand_mappings() {
    let cfg = GenConfig::deep_chain(1);
    let mut check = Validator::default();
    generate_into(&cfg, &mut check).expect("valid stream");
    assert!(check.nr_mappings() > 100_000, "{}", check.nr_mappings());
    let md = generate(&cfg).expect("gen");
    assert!(md.superblock.time >= 100);
    // The chain: device k+1's parent is device k for the first 100 snapshots, so each
    // creation_time is one more than the previous chain member's.
    let chain: Vec<u32> = md.devices.iter().map(|d| d.details.creation_time).collect();
    assert!(chain.windows(2).filter(|w| w[1] == w[0] + 1).count() >= 100);
}

#[test]
fn large_corpus_streams_more_than_a_million_mappings_into_a_writer() {
    let mut check = Validator::default();
    generate_into(&GenConfig::large(3), &mut check).expect("valid stream");
    assert!(check.nr_mappings() > 1_000_000, "{}", check.nr_mappings());
    let mut sink = dump_writer(std::io::sink(), Dialect::V09);
    generate_into(&GenConfig::large(3), &mut sink).expect("write");
}

#[test]
fn a_million_mapping_dump_round_trips_through_the_streaming_reader_and_writer() {
    let cfg = GenConfig::large(4);
    let mut xml = dump_writer(Vec::new(), Dialect::V09);
    generate_into(&cfg, &mut xml).expect("write");
    let bytes = xml.into_inner();
    // Read and write again without building the IR; the validator sees every mapping.
    let mut check = Validator::default();
    read_xml(&bytes[..], &mut check).expect("read");
    assert!(check.nr_mappings() > 1_000_000);
    let mut again = dump_writer(Vec::new(), Dialect::V09);
    read_xml(&bytes[..], &mut again).expect("reread");
    assert!(again.into_inner() == bytes, "streamed rewrite differs");
}
