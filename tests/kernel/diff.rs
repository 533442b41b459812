//! Differential runs: one operation script on thinly and on the guest kernel's dm-thin; the
//! results compared block by block (what a reader sees), by mappings, sharing and space.
//!
//! The five scripts in tests/kernel/scripts/ run in ONE guest boot (each on its own pool:
//! three disks per script). THINLY_KERNEL_DIFF_SCRIPT=FILE[:FILE…] runs other scripts the
//! same way; THINLY_KERNEL_HEAVY=1 adds a larger random script.

use thinly_lab::kernel::harness;

use harness::{Guest, Work};
use std::path::{Path, PathBuf};
use thinly_lab::kernel::compare::{
    check_consistent, compare, consistency_row, status_rows, Report, Side,
};
use thinly_lab::kernel::guest::{guest_plan, parse_results, GuestNames};
use thinly_lab::kernel::observe::{reader_view_from_dump, MetaView};
use thinly_lab::kernel::opscript::Script;
use thinly_lab::kernel::runner::{run_thinly, OpOutcome};

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel/scripts")
}

fn load(path: &Path) -> Script {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    Script::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"))
}

fn standard_scripts() -> Vec<Script> {
    ["random-writes", "snapshot-chain-50", "discard-shared", "delete-middle", "full-pool"]
        .iter()
        .map(|n| load(&scripts_dir().join(format!("{n}.ops"))))
        .collect()
}

/// A larger random script (THINLY_KERNEL_HEAVY=1).
fn heavy_script() -> Script {
    let mut s =
        String::from("pool data_blocks=4096 block_size=64k thin_size=32m metadata_size=16m\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    s.push_str("create_thin 0\n");
    let mut live = vec![0u64];
    let mut next = 1;
    for i in 0..600 {
        let d = live[rnd(live.len() as u64) as usize];
        match rnd(20) {
            0 if live.len() < 12 => {
                s.push_str(&format!("create_snap {next} {d}\n"));
                live.push(next);
                next += 1;
            }
            1 if live.len() > 2 => {
                s.push_str(&format!("delete {d}\n"));
                live.retain(|&x| x != d);
            }
            2..=4 => {
                let len = (1 + rnd(64)) * 16384;
                let off = rnd((32 << 20) - len) / 512 * 512;
                s.push_str(&format!("discard {d} {off} {len}\n"));
            }
            _ => {
                let len = (1 + rnd(256)) * 1024;
                let off = rnd((32 << 20) - len) / 512 * 512;
                s.push_str(&format!("write {d} {off} {len} h{i}\n"));
            }
        }
    }
    Script::parse("heavy-random", &s).expect("the heavy script parses")
}

/// One script's files on the host.
struct Case {
    script: Script,
    tag: String,
    thinly_dir: PathBuf,
    meta: PathBuf,
    data: PathBuf,
    scratch: PathBuf,
    share: PathBuf,
    slots: Vec<thinly_lab::kernel::observe::DumpSlot>,
}

/// Runs the scripts on thinly and (in one guest boot) on the kernel; returns the reports.
fn run_differential(scripts: Vec<Script>, work: &Work) -> Vec<Report> {
    let share = work.sub("share");
    let mut guest = Guest::new().timeout(1200);
    let mut master = String::from("RC=0\n");
    let mut cases = Vec::new();
    for (i, script) in scripts.into_iter().enumerate() {
        let tag = format!("s{i}");
        let g = &script.geometry;
        let (meta, data, scratch) = (
            work.path(&format!("{tag}-meta")),
            work.path(&format!("{tag}-data")),
            work.path(&format!("{tag}-dump")),
        );
        let names = GuestNames {
            prefix: tag.clone(),
            meta_file: format!("{tag}-meta"),
            data_file: format!("{tag}-data"),
            scratch_file: format!("{tag}-dump"),
            dir: format!("/host/{tag}"),
        };
        let plan = guest_plan(&script, &names);
        let dir = share.join(&tag);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, bytes) in &plan.payloads {
            std::fs::write(dir.join(f), bytes).unwrap();
        }
        std::fs::write(dir.join("run.sh"), &plan.script).unwrap();
        harness::sparse_file(&meta, g.metadata_size_bytes);
        harness::sparse_file(&data, g.nr_data_blocks * g.block_size_bytes);
        harness::sparse_file(&scratch, plan.scratch_bytes);
        guest = guest.disk(&meta).disk(&data).disk(&scratch);
        master.push_str(&format!(
            "log \"script {}\"; sh /host/{tag}/run.sh || {{ fail \"{tag} harness exit $?\"; RC=1; }}\n",
            script.name
        ));
        cases.push(Case {
            thinly_dir: work.path(&format!("{tag}-thinly")),
            script,
            tag,
            meta,
            data,
            scratch,
            share: dir,
            slots: plan.slots,
        });
    }
    master.push_str("finish\n");
    // The kernel side first (the long part), then thinly on the host.
    let run = guest.run(&share, "diff.sh", &master);
    run.expect_ok("the differential guest run");
    cases.iter().map(report_for).collect()
}

fn report_for(c: &Case) -> Report {
    let g = &c.script.geometry;
    // thinly.
    let t = run_thinly(&c.thinly_dir, &c.script).expect("running the script on thinly");
    let (t_out, t_reader) = (t.outcomes, t.reader);
    let t_meta = MetaView::read(&c.thinly_dir.join("metadata")).expect("reading thinly's metadata");
    let t_files =
        t_meta.reader_view_from_data(&c.thinly_dir.join("data"), g.thin_blocks()).unwrap();
    // The kernel.
    let results = std::fs::read_to_string(c.share.join("results.txt")).unwrap_or_default();
    let k_out: Vec<OpOutcome> = parse_results(&results)
        .into_iter()
        .map(|(line, ok, msg)| OpOutcome { line, ok, error: (!ok).then_some(msg) })
        .collect();
    assert_eq!(k_out.len(), c.script.steps.len(), "{}: the guest ran every operation", c.tag);
    if let Ok(e) = std::fs::read_to_string(c.share.join("dump-errors.txt")) {
        panic!("{}: the guest could not read devices: {e}", c.tag);
    }
    let k_meta =
        MetaView::read(&c.meta).expect("reading the kernel's metadata with thinly's engine");
    let k_reader = reader_view_from_dump(&c.scratch, &c.slots, g.block_size_bytes).unwrap();
    let k_files = k_meta.reader_view_from_data(&c.data, g.thin_blocks()).unwrap();
    let mut report = compare(
        &format!("{} ({} operations)", c.script.name, c.script.steps.len()),
        &Side { meta: &t_meta, reader: &t_reader, outcomes: &t_out },
        &Side { meta: &k_meta, reader: &k_reader, outcomes: &k_out },
    );
    consistency_row(
        &mut report,
        check_consistent(&t_reader, &t_files),
        check_consistent(&k_reader, &k_files),
    );
    let status = std::fs::read_to_string(c.share.join("pool-status.txt")).unwrap_or_default();
    status_rows(&mut report, &t.status, status.trim());
    // Both metadata files check clean, with the real tool and the engine's checker; the
    // guest's own thin_check too.
    let guest_check = std::fs::read_to_string(c.share.join("thin_check.txt")).unwrap_or_default();
    assert!(guest_check.contains("exit 0"), "{}: thin_check in the guest:\n{guest_check}", c.tag);
    for (who, meta) in [("thinly", c.thinly_dir.join("metadata")), ("kernel", c.meta.clone())] {
        if let Some((clean, out)) = harness::real_thin_check(&meta) {
            assert!(clean, "{}: thin_check of the {who} pool:\n{out}", c.tag);
        }
        let problems = harness::engine_check(&meta);
        assert!(problems.is_empty(), "{}: engine check of the {who} pool: {problems:?}", c.tag);
    }
    println!("{report}kernel status before teardown: {}", status.trim());
    for (o, k) in t_out.iter().zip(&k_out) {
        if o.ok != k.ok {
            println!("  line {}: thinly {:?}, kernel {:?}", o.line, o.error, k.error);
        }
    }
    report
}

fn assert_identical(reports: &[Report]) {
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.identical())
        .map(|r| {
            format!(
                "{}:\n{}",
                r.title,
                r.differences()
                    .map(|d| format!(
                        "  {} {}: thinly {} kernel {} {}",
                        d.scope, d.what, d.thinly, d.kernel, d.detail
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
        .collect();
    assert!(bad.is_empty(), "thinly and the kernel differ:\n{}", bad.join("\n"));
}

#[test]
fn thinly_and_the_kernel_agree_on_five_scripts() {
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("kernel-diff");
    let mut scripts = standard_scripts();
    if harness::heavy() {
        scripts.push(heavy_script());
    }
    let reports = run_differential(scripts, &work);
    assert_identical(&reports);
}

/// Docker's devicemapper message sequence: only set_transaction_id moves the id, and a
/// stale OLD is refused, in the kernel as in thinly (`dmsetup status` and the metadata).
#[test]
fn thinly_and_the_kernel_agree_on_dockers_transaction_ids() {
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("kernel-diff-txid");
    let script = load(&scripts_dir().join("docker-transactions.ops"));
    let reports = run_differential(vec![script], &work);
    assert_identical(&reports);
}

/// Without the lab: thinly ends Docker's sequence at the id the kernel would report, having
/// refused exactly the two stale set_transaction_id lines.
#[test]
fn dockers_transaction_ids_on_thinly_are_the_kernels() {
    let script = load(&scripts_dir().join("docker-transactions.ops"));
    let dir = tempfile::tempdir().unwrap();
    let run = run_thinly(&dir.path().join("pool"), &script).unwrap();
    let fails: Vec<usize> = run.outcomes.iter().filter(|o| !o.ok).map(|o| o.line).collect();
    assert_eq!(fails, vec![13, 24]);
    assert_eq!(run.status.transaction_id, 7);
    let meta = MetaView::read(&dir.path().join("pool/metadata")).unwrap();
    assert_eq!(meta.transaction_id, 7);
    assert_eq!(meta.devices.keys().copied().collect::<Vec<_>>(), vec![0, 3, 4]);
}

/// An opt-in runner, not part of the suite: `THINLY_KERNEL_DIFF_SCRIPT=a.ops:b.ops cargo test
/// --test kernel -- --ignored environment` runs those scripts the same way.
#[test]
#[ignore = "runs the scripts named in THINLY_KERNEL_DIFF_SCRIPT"]
fn differential_on_scripts_named_in_the_environment() {
    let list = std::env::var("THINLY_KERNEL_DIFF_SCRIPT")
        .expect("set THINLY_KERNEL_DIFF_SCRIPT=FILE[:FILE…]");
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("kernel-diff-env");
    let scripts = list.split(':').map(|p| load(Path::new(p))).collect();
    let reports = run_differential(scripts, &work);
    assert_identical(&reports);
}

/// Without the lab: every script runs on thinly, and the guest translation is well formed.
#[test]
fn scripts_run_on_thinly_and_translate_for_the_guest() {
    for script in standard_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_thinly(&dir.path().join("pool"), &script).unwrap();
        let (out, reader) = (run.outcomes, run.reader);
        assert_eq!(out.len(), script.steps.len());
        assert_eq!(reader.keys().copied().collect::<Vec<_>>(), script.final_devices());
        let plan = guest_plan(
            &script,
            &GuestNames {
                prefix: "s".into(),
                meta_file: "m".into(),
                data_file: "d".into(),
                scratch_file: "x".into(),
                dir: "/host/s".into(),
            },
        );
        assert_eq!(plan.slots.len(), script.final_devices().len());
        let fails: Vec<usize> = out.iter().filter(|o| !o.ok).map(|o| o.line).collect();
        println!("{}: {} ops, failed lines {fails:?}", script.name, out.len());
        if script.name != "full-pool" {
            assert!(fails.is_empty(), "{}: {:?}", script.name, out);
        }
    }
}
