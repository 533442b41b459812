//! Comparisons with the installed thin-provisioning-tools 0.9.0.

use std::path::Path;
use std::process::{Command, Output};

use crate::fsck::gen::{generate_into, GenConfig};
use crate::fsck::human::to_human_string;
use crate::fsck::metadata_size::estimate_blocks_v09;
use crate::fsck::validate::Validator;
use crate::fsck::xml::{dump_writer, parse_xml, to_xml_string, Dialect};

use super::have_tool;
use thinly_test_support::sample_images;

fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

fn stdout_of(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn thin_dump_of_every_sample_image_equals_our_rewrite_of_it() {
    if !have_tool("thin_dump") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let images = sample_images(dir.path());
    for image in &images {
        let path = image.to_str().expect("path");
        let real = stdout_of("thin_dump", &[path]);
        let md = parse_xml(real.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(to_xml_string(&md, Dialect::V09).expect("write"), real, "{path}");
        let human = stdout_of("thin_dump", &["-f", "human_readable", path]);
        assert_eq!(to_human_string(&md).expect("human"), human, "{path}");
        // Our own rewrite feeds the real restore back to the same dump.
        assert_eq!(md.normalised().expect("normalise"), md, "{path}: dumps are normal");
    }
    assert!(images.len() >= 5, "expected the sample images");
}

/// Restores `cfg`'s pool with the real thin_restore, checks it with thin_check and
/// compares thin_dump with our writer, streaming both sides through files.
fn restore_check_dump(cfg: &GenConfig) {
    if !(have_tool("thin_restore") && have_tool("thin_check") && have_tool("thin_dump")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let xml_path = dir.path().join("pool.xml");
    let meta_path = dir.path().join("pool.meta");
    let file = std::io::BufWriter::new(std::fs::File::create(&xml_path).expect("create"));
    let mut writer = dump_writer(file, Dialect::V09);
    generate_into(cfg, &mut writer).expect("generate");
    drop(writer);

    let mut stats = Validator::default();
    generate_into(cfg, &mut stats).expect("valid");
    let nr_devices = stats.nr_devices();
    // Size: twice the 0.9 estimate for the mappings as restored (no sharing), ≥ 8 MiB.
    let blocks = estimate_blocks_v09(stats.nr_mappings() * 128, 128, nr_devices) * 2;
    let bytes = (blocks * 4096).max(8 << 20);
    std::fs::File::create(&meta_path).and_then(|f| f.set_len(bytes)).expect("size META");

    let (xml, meta) = (xml_path.to_str().expect("path"), meta_path.to_str().expect("path"));
    let restore = run("thin_restore", &["-i", xml, "-o", meta]);
    assert!(restore.status.success(), "thin_restore: {}", String::from_utf8_lossy(&restore.stderr));
    let check = run("thin_check", &[meta]);
    assert!(check.status.success(), "thin_check: {}", String::from_utf8_lossy(&check.stderr));
    let dumped = run("thin_dump", &[meta]);
    assert!(dumped.status.success());
    let ours = std::fs::read(&xml_path).expect("read XML");
    if let Some(keep) = std::env::var_os("THINLY_KEEP_DIR") {
        let name = format!("gen-{}-{}.xml", cfg.chain_depth, cfg.seed);
        std::fs::write(Path::new(&keep).join(name), &ours).expect("keep XML");
    }
    assert!(dumped.stdout == ours, "thin_dump differs from our XML for {cfg:?}");
}

#[test]
fn small_generated_pools_restore_check_and_dump_back_identically() {
    for seed in 0..3 {
        restore_check_dump(&GenConfig::small(seed));
    }
}

#[test]
fn a_deep_snapshot_chain_restores_checks_and_dumps_back_identically() {
    restore_check_dump(&GenConfig::deep_chain(11));
}

#[test]
fn a_million_mapping_pool_restores_checks_and_dumps_back_identically() {
    restore_check_dump(&GenConfig::large(5));
}
