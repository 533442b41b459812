use crate::fsck::error::Error;
use crate::fsck::human::to_human_string;
use crate::fsck::ir::{Device, Item, Metadata, Run, SharedDef, Superblock, ThinDevice};

fn run(origin_begin: u64, data_begin: u64, len: u64, time: u32) -> Run {
    Run { origin_begin, data_begin, len, time }
}

fn pool(items: Vec<Item>, mapped_blocks: u64) -> Metadata {
    Metadata {
        superblock: Superblock {
            time: 2,
            data_block_size: 128,
            nr_data_blocks: 1000,
            flags: Some(0),
            version: Some(2),
            ..Superblock::default()
        },
        defs: vec![SharedDef { name: "s".into(), runs: vec![run(10, 110, 5, 0)] }],
        devices: vec![ThinDevice {
            details: Device { dev_id: 7, mapped_blocks, snap_time: 2, ..Device::default() },
            items,
        }],
    }
}

#[test]
fn normalising_expands_refs_sorts_and_coalesces_across_the_splice() {
    let md = pool(
        vec![
            Item::from_run(&run(15, 115, 1, 0)),
            Item::Ref("s".into()),
            Item::from_run(&run(0, 100, 10, 0)),
        ],
        16,
    );
    md.validate().expect_err("items out of order");
    let n = md.normalised().expect("normalise");
    assert!(n.defs.is_empty());
    assert_eq!(n.devices[0].items, vec![Item::from_run(&run(0, 100, 16, 0))]);
    n.validate().expect("valid once normalised");
}

#[test]
fn validation_catches_wrong_mapped_blocks_late_times_and_data_beyond_the_pool() {
    let wrong_count = pool(vec![Item::from_run(&run(0, 0, 3, 0))], 4);
    assert!(matches!(wrong_count.validate(), Err(Error::Invalid { dev_id: Some(7), .. })));
    let late = pool(vec![Item::from_run(&run(0, 0, 3, 3))], 3);
    assert!(late.validate().is_err());
    let beyond = pool(vec![Item::from_run(&run(0, 999, 2, 0))], 2);
    assert!(beyond.validate().is_err());
    let fine = pool(vec![Item::from_run(&run(0, 998, 2, 0)), Item::Ref("s".into())], 7);
    fine.validate().expect("valid");
}

#[test]
fn human_readable_output_matches_the_tools_layout() {
    let md = pool(vec![Item::from_run(&run(0, 100, 5, 0)), Item::from_run(&run(5, 500, 1, 1))], 6);
    assert_eq!(
        to_human_string(&md).expect("write"),
        "begin superblock: \"\", 2, 0, 0, 2, 128, 1000\n\
         device: 7\nmapped_blocks: 6\ntransaction: 0\ncreation time: 0\nsnap time: 2\n\
         \x20   (0..4) -> (100..104), 0\n    5 -> 500, 1\n\nend superblock\n"
    );
}
