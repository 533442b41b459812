//! `thinly attach` / `thinly detach` on this host's path (FUSE + loop device): a volume
//! becomes a block device that a filesystem can live on; detach keeps every flushed
//! write; a busy device is refused; with no server attach says so; a server that dies
//! while attached makes I/O fail instead of hang. Needs root, FUSE, loop devices and
//! nbdfuse: skips loudly without them, fails under `CI`.

mod attach_support;

use attach_support::{bounded, host_can_attach, ok, thinly, Lab};

/// A recognizable 1 MiB pattern for `seed`.
fn pattern(seed: u8) -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn attachments(lab: &Lab) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&thinly(&["list", "--json", "--pool", lab.pool()])).expect("JSON");
    v.as_array().expect("a list").clone()
}

#[test]
fn a_filesystem_on_an_attached_volume_survives_detach_and_reattach() {
    if !host_can_attach() {
        return;
    }
    let mut lab = Lab::new("2G");
    thinly(&["create", "v", "--size", "1G", "--pool", lab.pool()]);
    let dev = lab.attach("v");
    assert!(dev.starts_with("/dev/loop"), "attach printed {dev}");
    let vols = attachments(&lab);
    assert_eq!(vols[0]["attached"].as_str(), Some(dev.as_str()));
    let again = bounded(&attach_support::thinly_bin(), &["attach", "v", "--pool", lab.pool()], 60);
    assert!(!again.status.success(), "a second attach of one volume must be refused");

    ok("mkfs.ext4", &["-q", &dev], 120);
    let mnt = lab.mount(&dev, "m1", "rw");
    std::fs::write(mnt.join("f"), pattern(7)).expect("write");
    lab.umount(&mnt);
    lab.detach(&dev);
    assert!(attachments(&lab)[0]["attached"].is_null());
    assert!(!lab.dir.join("attach/v").exists(), "detach leaves no mount point behind");

    // The server restarts cleanly in between: what the filesystem flushed is committed.
    lab.stop_server();
    lab.start_server();
    let dev = lab.attach("v");
    ok("e2fsck", &["-fn", &dev], 120);
    let mnt = lab.mount(&dev, "m2", "ro");
    assert!(std::fs::read(mnt.join("f")).expect("read") == pattern(7));
    lab.umount(&mnt);
    lab.detach("v");
}

#[test]
fn detach_refuses_a_mounted_device_and_leaves_it_attached() {
    if !host_can_attach() {
        return;
    }
    let mut lab = Lab::new("1G");
    thinly(&["create", "v", "--size", "256M", "--pool", lab.pool()]);
    let dev = lab.attach("v");
    ok("mkfs.ext4", &["-q", &dev], 120);
    let mnt = lab.mount(&dev, "m", "rw");
    let out = bounded(&attach_support::thinly_bin(), &["detach", "v", "--pool", lab.pool()], 60);
    assert!(!out.status.success(), "detach of a mounted device must be refused");
    assert_eq!(attachments(&lab)[0]["attached"].as_str(), Some(dev.as_str()));
    std::fs::write(mnt.join("still-works"), b"yes").expect("the mount still works");
    lab.umount(&mnt);
    lab.detach("v");
}

#[test]
fn a_read_only_attachment_refuses_writes() {
    if !host_can_attach() {
        return;
    }
    let lab = Lab::new("1G");
    thinly(&["create", "v", "--size", "64M", "--pool", lab.pool()]);
    let dev = thinly(&["attach", "v", "--read-only", "--pool", lab.pool()]).trim().to_string();
    let of = format!("of={dev}");
    let w = bounded("dd", &["if=/dev/zero", &of, "bs=4096", "count=1", "oflag=direct"], 60);
    assert!(!w.status.success(), "a write to a read-only attachment must fail");
    ok("dd", &[&format!("if={dev}"), "of=/dev/null", "bs=4096", "count=16", "iflag=direct"], 60);
    lab.detach("v");
}

#[test]
fn attach_without_a_running_server_says_so_and_leaves_nothing_behind() {
    if !host_can_attach() {
        return;
    }
    let mut lab = Lab::new("1G");
    thinly(&["create", "v", "--size", "64M", "--pool", lab.pool()]);
    lab.stop_server();
    let out = bounded(&attach_support::thinly_bin(), &["attach", "v", "--pool", lab.pool()], 60);
    assert!(!out.status.success(), "attach with no server must fail");
    assert!(out.stdout.is_empty(), "no device is printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("thinly serve"), "the error names the missing server: {err}");
    assert!(attachments(&lab)[0]["attached"].is_null());
    lab.start_server();
    let out =
        bounded(&attach_support::thinly_bin(), &["attach", "nosuch", "--pool", lab.pool()], 60);
    assert!(!out.status.success(), "attach of a missing volume must fail");
    assert!(!lab.dir.join("attach/nosuch").exists(), "a failed attach leaves no mount point");
}

#[test]
fn a_server_killed_while_attached_fails_io_and_keeps_what_was_flushed() {
    if !host_can_attach() {
        return;
    }
    let mut lab = Lab::new("1G");
    thinly(&["create", "v", "--size", "64M", "--pool", lab.pool()]);
    let dev = lab.attach("v");
    let src = lab.path("src").join("pattern");
    std::fs::write(&src, pattern(3)).expect("write the pattern");
    let (inp, of) = (format!("if={}", src.display()), format!("of={dev}"));
    ok("dd", &[&inp, &of, "bs=1M", "oflag=direct", "conv=fsync"], 60);

    lab.kill_server();
    lab.start_server();
    // The old connection is dead: I/O must fail within the bound, not hang.
    let r = bounded(
        "dd",
        &[&format!("if={dev}"), "of=/dev/null", "bs=4096", "count=1", "iflag=direct"],
        60,
    );
    assert!(!r.status.success(), "a read on a dead connection must fail");
    let d = bounded(&attach_support::thinly_bin(), &["detach", "v", "--pool", lab.pool()], 60);
    assert!(!d.status.success(), "detach must refuse when the final flush fails");
    assert_eq!(attachments(&lab)[0]["attached"].as_str(), Some(dev.as_str()));
    thinly(&["detach", "v", "--force", "--pool", lab.pool()]);

    let dev = lab.attach("v");
    let back = lab.path("back").join("pattern");
    let of = format!("of={}", back.display());
    ok("dd", &[&format!("if={dev}"), &of, "bs=1M", "count=1", "iflag=direct"], 60);
    assert!(std::fs::read(&back).expect("read back") == pattern(3), "the flushed write survived");
    lab.detach("v");
}

#[test]
fn via_kernel_nbd_attaches_through_dev_nbd_or_refuses_cleanly_without_it() {
    if !host_can_attach() {
        return;
    }
    let mut lab = Lab::new("1G");
    thinly(&["create", "v", "--size", "64M", "--pool", lab.pool()]);
    let args = ["attach", "v", "--via", "kernel-nbd", "--pool", lab.pool()];
    if !std::path::Path::new("/sys/block/nbd0").exists() {
        let out = bounded(&attach_support::thinly_bin(), &args, 60);
        assert!(!out.status.success(), "no /dev/nbd*: attach --via kernel-nbd must fail");
        assert!(attachments(&lab)[0]["attached"].is_null(), "and record nothing");
        return;
    }
    let dev = thinly(&args).trim().to_string();
    assert!(dev.starts_with("/dev/nbd"), "attach printed {dev}");
    ok("mkfs.ext4", &["-q", &dev], 120);
    let mnt = lab.mount(&dev, "m", "rw");
    std::fs::write(mnt.join("f"), pattern(9)).expect("write");
    lab.umount(&mnt);
    lab.detach("v");
    let dev = lab.attach("v");
    let mnt = lab.mount(&dev, "m2", "ro");
    assert!(std::fs::read(mnt.join("f")).expect("read") == pattern(9));
    lab.umount(&mnt);
    lab.detach("v");
}
