use crate::fsck::error::Error;
use crate::fsck::ir::{Item, Metadata, Run};
use crate::fsck::xml::{parse_xml, to_xml_string, Dialect};

use super::sample_text;

fn parse(s: &str) -> Result<Metadata, Error> {
    parse_xml(s.as_bytes())
}

#[test]
fn sample_dumps_written_back_are_byte_identical() {
    for name in ["empty.xml", "snaps.xml", "kernel-basic.xml"] {
        let text = sample_text(name);
        let md = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        md.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(to_xml_string(&md, Dialect::V09).expect("write"), text, "{name}");
    }
}

#[test]
fn one_x_sample_with_def_and_ref_round_trips_in_the_one_x_dialect() {
    let text = sample_text("shared.xml");
    let md = parse(&text).expect("parse");
    assert_eq!(md.defs.len(), 1);
    assert_eq!(md.devices[1].items, vec![Item::Ref("0".into())]);
    md.validate().expect("valid");
    assert_eq!(md.nr_mappings(), 600);
    assert_eq!(to_xml_string(&md, Dialect::V1).expect("write"), text);
}

#[test]
fn one_x_refs_are_expanded_for_the_zero_nine_dialect() {
    let text = sample_text("shared.xml");
    let out = to_xml_string(&parse(&text).expect("parse"), Dialect::V09).expect("write");
    assert!(out.starts_with(
        "<superblock uuid=\"\" time=\"1\" transaction=\"1\" flags=\"0\" version=\"2\""
    ));
    assert_eq!(
        out.matches(
            "<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"300\" time=\"0\"/>"
        )
        .count(),
        2
    );
    assert!(!out.contains("<ref") && !out.contains("<def"));
}

#[test]
fn absent_flags_and_version_print_as_zero_nine_restore_would_store_them() {
    let md = parse(r#"<superblock uuid="u" time="0" transaction="0" data_block_size="128" nr_data_blocks="10"></superblock>"#)
        .expect("parse");
    assert_eq!(md.superblock.flags, None);
    assert_eq!(
        to_xml_string(&md, Dialect::V09).expect("write"),
        "<superblock uuid=\"u\" time=\"0\" transaction=\"0\" flags=\"0\" version=\"1\" data_block_size=\"128\" nr_data_blocks=\"10\">\n</superblock>\n"
    );
}

#[test]
fn writer_coalesces_runs_only_when_both_block_numbers_continue_with_equal_time() {
    let text = r#"<superblock uuid="" time="2" transaction="0" flags="0" version="2" data_block_size="128" nr_data_blocks="100">
  <device dev_id="1" mapped_blocks="7" transaction="0" creation_time="0" snap_time="0">
    <single_mapping origin_block="0" data_block="10" time="1"/>
    <range_mapping origin_begin="1" data_begin="11" length="2" time="1"/>
    <single_mapping origin_block="3" data_block="13" time="2"/>
    <single_mapping origin_block="4" data_block="15" time="2"/>
    <single_mapping origin_block="6" data_block="16" time="2"/>
    <single_mapping origin_block="7" data_block="17" time="2"/>
  </device>
</superblock>
"#;
    let out = to_xml_string(&parse(text).expect("parse"), Dialect::V09).expect("write");
    let body: Vec<&str> = out.lines().skip(2).map(str::trim).collect();
    assert_eq!(
        body[..4],
        [
            r#"<range_mapping origin_begin="0" data_begin="10" length="3" time="1"/>"#,
            r#"<single_mapping origin_block="3" data_block="13" time="2"/>"#,
            r#"<single_mapping origin_block="4" data_block="15" time="2"/>"#,
            r#"<range_mapping origin_begin="6" data_begin="16" length="2" time="2"/>"#,
        ]
    );
}

#[test]
fn reader_accepts_prolog_comments_bom_quotes_entities_and_explicit_end_tags() {
    let text = "\u{feff}<?xml version=\"1.0\"?>\n<!-- a dump -->\n<!DOCTYPE superblock>\n\
        <superblock uuid='a&amp;b&#x41;' time=\"0\" transaction=\"0\" data_block_size=\"128\" nr_data_blocks=\"9\">\n\
        <device dev_id=\"0\" mapped_blocks=\"1\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\" >\n\
        <single_mapping origin_block=\"5\" data_block=\"2\" time=\"0\"></single_mapping><!-- x -->\n\
        </device>\n</superblock>\n<!-- trailer -->\n";
    let md = parse(text).expect("parse");
    assert_eq!(md.superblock.uuid, "a&bA");
    assert_eq!(
        md.devices[0].items[0].run(),
        Some(Run { origin_begin: 5, data_begin: 2, len: 1, time: 0 })
    );
}

const SB: &str =
    r#"<superblock uuid="" time="1" transaction="0" data_block_size="128" nr_data_blocks="9">"#;

/// (input, line of the error, a check of the variant)
type Case = (String, u64, fn(&Error) -> bool);

#[test]
fn malformed_inputs_fail_with_the_line_and_the_reason() {
    let cases: Vec<Case> = vec![
        (String::new(), 1, |e| matches!(e, Error::Syntax { .. })),
        (format!("{SB}\n<device dev_id=\"1\"/>\n</superblock>"), 2,
            |e| matches!(e, Error::MissingAttribute { attribute: "mapped_blocks", .. })),
        (format!("{SB}\n\n<devise/>\n</superblock>"), 3, |e| matches!(e, Error::UnknownElement { .. })),
        (format!("{SB}\n<def name=\"x\">\n</device>\n</superblock>"), 3, |e| matches!(e, Error::Syntax { .. })),
        (format!("{SB}\n<def name=\"x\">\n"), 3, |e| matches!(e, Error::Syntax { .. })),
        (r#"<superblock uuid="" time="4294967296" transaction="0" data_block_size="1" nr_data_blocks="9"/>"#.into(), 1,
            |e| matches!(e, Error::BadValue { attribute: "time", .. })),
        (r#"<superblock uuid="" time="-1" transaction="0" data_block_size="1" nr_data_blocks="9"/>"#.into(), 1,
            |e| matches!(e, Error::BadValue { attribute: "time", .. })),
        (r#"<superblock uuid="" uuid="" time="1" transaction="0" data_block_size="1" nr_data_blocks="9"/>"#.into(), 1,
            |e| matches!(e, Error::DuplicateAttribute { attribute: "uuid", .. })),
        (r#"<superblock uuid="" colour="red" time="1" transaction="0" data_block_size="1" nr_data_blocks="9"/>"#.into(), 1,
            |e| matches!(e, Error::UnknownAttribute { .. })),
        (format!("{SB}\n<single_mapping origin_block=\"0\" data_block=\"0\" time=\"0\"/>\n</superblock>"), 2,
            |e| matches!(e, Error::Misplaced { .. })),
        (format!("{SB}\n<def name=\"x\">\n<ref name=\"x\"/>\n</def>\n</superblock>"), 3, |e| matches!(e, Error::Misplaced { .. })),
        (format!("{SB}\n<device dev_id=\"1\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n<ref name=\"nope\"/>\n</device>\n</superblock>"), 3,
            |e| matches!(e, Error::AtLine { source, .. } if matches!(**source, Error::UndefinedRef { .. }))),
        (format!("{SB}\n</superblock>\n<superblock/>"), 3, |e| matches!(e, Error::Misplaced { .. })),
        (format!("{SB}\n<!-- never closed"), 2, |e| matches!(e, Error::Syntax { .. })),
        (format!("<!DOCTYPE x [<!ENTITY a \"b\">]>\n{SB}</superblock>"), 1, |e| matches!(e, Error::Syntax { .. })),
        (format!("{SB}\n<device dev_id=\"1\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"0\" time=\"0\"/>"), 3,
            |e| matches!(e, Error::BadValue { attribute: "length", .. })),
        (format!("{SB}\n<device dev_id=1/>"), 2, |e| matches!(e, Error::Syntax { .. })),
        (format!("{SB}\n<device dev_id=\"&bogus;\"/>"), 2, |e| matches!(e, Error::Syntax { .. })),
    ];
    for (input, line, check) in cases {
        let err = parse(&input).expect_err(&input);
        assert!(check(&err), "{input:?}: unexpected error {err:?}");
        assert_eq!(err.line(), Some(line), "{input:?}: {err}");
    }
}

#[test]
fn over_long_attribute_values_hit_a_named_limit() {
    let input = format!("<superblock uuid=\"{}\"", "x".repeat(10_000));
    assert!(matches!(parse(&input), Err(Error::Limit { .. })));
}

#[test]
fn truncated_and_corrupted_dumps_never_panic() {
    let text = sample_text("kernel-basic.xml");
    let bytes = text.as_bytes();
    for cut in 0..bytes.len() {
        let _ = parse_xml(&bytes[..cut]);
    }
    let mut state = 0x1234_5678_u64;
    for _ in 0..2000 {
        let mut copy = bytes.to_vec();
        for _ in 0..3 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (state >> 33) as usize % copy.len();
            copy[at] = (state >> 13) as u8;
        }
        let _ = parse_xml(&copy[..]);
    }
}
