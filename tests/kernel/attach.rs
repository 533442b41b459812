//! `thinly attach --via kernel-nbd` on a real `/dev/nbdN`: the path the host cannot test
//! (it has no `nbd` module) runs in the guest, whose kernel has the NBD client. `thinly
//! serve` and `thinly attach`/`detach` run inside the guest on a pool kept in ext4 on a
//! virtio disk (as in the power-loss test); the guest script (`attach-guest.sh`) formats,
//! mounts, writes, detaches, reattaches (read-write and read-only) and reads back; checks
//! that detach refuses a mounted device; writes raw bytes to a second volume that must
//! survive a detach; a killed server must fail I/O, not hang it, and `detach --force` must
//! clear the attachment; ends with the real thin_check on a cleanly stopped pool.
//! It prints the guest's figures (attach + mount, umount + detach, an untar of small files
//! through thinly against a loop device on a plain file; TCG guest time, not the host's).
//! One guest boot.

use thinly_lab::kernel::harness;

use harness::{Guest, Work};
use std::path::Path;
use std::process::Command;
use thinly_test_support::Rng;

const GUEST_SCRIPT: &str = include_str!("attach-guest.sh");
/// How many small files the untar figure extracts, and their largest size.
const NR_SMALL_FILES: u64 = 600;
const SMALL_FILE_MAX_BYTES: u64 = 4096;

/// A tar of `NR_SMALL_FILES` small files under `small/`, made with the host's tar.
fn small_tar(work: &Work, share: &Path) {
    let src = work.sub("tar-src");
    let mut rng = Rng(19);
    for i in 0..NR_SMALL_FILES {
        let dir = src.join(format!("small/d{}", i % 20));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let len = rng.range(1, SMALL_FILE_MAX_BYTES + 1) as usize;
        std::fs::write(dir.join(format!("f{i}")), rng.bytes(len)).expect("writing a small file");
    }
    let out = Command::new("tar")
        .arg("-cf")
        .arg(share.join("small.tar"))
        .arg("-C")
        .arg(&src)
        .arg("small")
        .output()
        .expect("running tar");
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn thinly_attach_through_the_kernels_nbd_client_survives_detach_and_a_dead_server() {
    if !harness::lab_ready() {
        return;
    }
    let Some(bin) = harness::require_thinly() else { return };
    if !thinly_test_support::require_tools(&["mkfs.ext4", "tar"]) {
        return;
    }
    let work = Work::new("kernel-attach");
    let root = work.sub("root");
    let pool = root.join("pool");
    let p = pool.to_str().expect("UTF-8 path");
    harness::thinly(&bin, &["pool", "create", "--pool", p, "--size", "512M"]);
    harness::thinly(&bin, &["create", "vol0", "--size", "128M", "--pool", p]);
    harness::thinly(&bin, &["create", "vol1", "--size", "64M", "--pool", p]);
    let disk = work.path("disk.img");
    harness::ext4_image(&root, &disk, 1 << 30);
    let share = work.sub("share");
    harness::ship_thinly(&bin, &share);
    std::fs::write(share.join("pattern.bin"), Rng(7).bytes(1 << 20)).expect("pattern.bin");
    small_tar(&work, &share);

    let run = Guest::new().disk(&disk).timeout(900).run(&share, "attach.sh", GUEST_SCRIPT);
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    let serve_log = std::fs::read_to_string(share.join("serve.log")).unwrap_or_default();
    if run.status != 0 {
        eprintln!("--- thinly serve's log in the guest ---\n{serve_log}");
    }
    run.expect_ok("thinly attach through the guest kernel's NBD client");
    let figures = std::fs::read_to_string(share.join("figures")).unwrap_or_default();
    let fig = |k: &str| -> f64 {
        let line = figures.lines().find(|l| l.starts_with(&format!("{k} ")));
        line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("figure {k} missing from {figures:?}"))
    };
    let (thinly_s, loop_s) = (fig("untar_thinly_s"), fig("untar_loop_s"));
    println!(
        "figures (guest under TCG): attach + mount {:.2} s, umount + detach {:.2} s; \
         untar of {NR_SMALL_FILES} small files + sync: {thinly_s:.2} s through thinly's \
         kernel NBD attachment, {loop_s:.2} s on a loop device over a plain file (ratio {:.2})",
        fig("attach_mount_s"),
        fig("umount_detach_s"),
        thinly_s / loop_s.max(0.01),
    );
}
