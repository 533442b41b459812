//! A Linux guest whose disks are thinly volumes served by `thinly serve`: vol-a through
//! QEMU's NBD client, vol-b through the guest kernel's nbd-client over a virtio-serial port.
//! The guest makes ext4 on both, writes files, runs fio with verify; while it keeps writing
//! to vol-b, the host takes a snapshot (`thinly snapshot` through the control socket); the
//! guest then attaches the snapshot's export (a second port), mounts it (replaying the
//! journal), finds every file it had synced before asking for the snapshot, and e2fsck finds
//! it clean. One guest boot (with fio); THINLY_KERNEL_HEAVY=1 runs longer fio jobs.

use thinly_lab::kernel::harness;

use harness::{Guest, PortRelay, Server, Work};
use std::time::{Duration, Instant};

const GUEST: &str = r#"
FIO_SIZE=${FIO_SIZE:-32M}
fio_verify() { # NAME TARGET SIZE
  fio --name=$1 --filename=$2 --size=$3 --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio \
      --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --output=/tmp/fio-$1.out
}
# (a) vol-a through QEMU's NBD client
A=
for b in /sys/block/vd*; do case "$(cat $b/serial)" in nbd*) A=/dev/${b##*/};; esac; done
[ -n "$A" ] || { fail "no NBD disk"; finish; }
log "vol-a: $A, $(blockdev --getsize64 $A) bytes"
check "mkfs.ext4 on vol-a" mkfs.ext4 -q -F $A
mkdir -p /mnt/a /mnt/b /mnt/s; check "mount vol-a" mount $A /mnt/a
for i in 1 2 3; do dd if=/dev/urandom of=/mnt/a/f$i bs=1M count=4 2>/dev/null; done
(cd /mnt/a && md5sum f1 f2 f3) > /run/a.md5
check "fio randwrite+verify on a file in vol-a's ext4" fio_verify a /mnt/a/fio.dat $FIO_SIZE
sync; echo 3 > /proc/sys/vm/drop_caches
check "vol-a files survive" sh -c 'cd /mnt/a && md5sum -c /run/a.md5'
check "umount vol-a" umount /mnt/a
check "e2fsck vol-a" e2fsck -fn $A

# (b) vol-b through the kernel's nbd-client (the port stays open: see kernel_kernel_pool.rs)
exec 3<>/dev/virtio-ports/nbd0; echo CONNECT >&3
socat UNIX-LISTEN:/run/b.sock FD:3 & S1=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/b.sock ] && break; sleep 0.2; done
check "nbd-client attaches vol-b" nbd-client -u /run/b.sock /dev/nbd0 -N vol-b
check "fio randwrite+verify on raw vol-b" fio_verify b /dev/nbd0 8M
check "mkfs.ext4 on vol-b" mkfs.ext4 -q -F /dev/nbd0
check "mount vol-b" mount /dev/nbd0 /mnt/b
for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/b/pre$i bs=256k count=4 2>/dev/null; done
mkdir /mnt/b/dir; echo "before the snapshot" > /mnt/b/dir/note
sync
(cd /mnt/b && md5sum pre1 pre2 pre3 pre4 dir/note) > /run/pre.md5
( i=0; while [ ! -e /run/stop ]; do dd if=/dev/urandom of=/mnt/b/bg$i bs=64k count=4 conv=fsync 2>/dev/null; i=$((i+1)); done ) & W=$!
sleep 1
touch /host/snap-request
check "the host took the snapshot while the guest wrote" wait_for /host/snap-done 120
cat /host/snap-done | tee -a $OUT
sleep 1; touch /run/stop; wait $W
check "vol-b files after the snapshot" sh -c 'cd /mnt/b && md5sum -c /run/pre.md5'
check "umount vol-b" umount /mnt/b
check "e2fsck vol-b" e2fsck -fn /dev/nbd0
nbd-client -d /dev/nbd0 >/dev/null 2>&1

# (c) the snapshot, through a second port
exec 4<>/dev/virtio-ports/nbd1; echo CONNECT >&4
socat UNIX-LISTEN:/run/s.sock FD:4 & S2=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/s.sock ] && break; sleep 0.2; done
check "nbd-client attaches the snapshot" nbd-client -u /run/s.sock /dev/nbd1 -N snap-b
check "the snapshot mounts (journal replay)" mount /dev/nbd1 /mnt/s
check "the snapshot holds every file synced before it" sh -c 'cd /mnt/s && md5sum -c /run/pre.md5'
log "snapshot holds $(ls /mnt/s | grep -c '^bg') background files"
check "umount the snapshot" umount /mnt/s
check "e2fsck of the snapshot is clean" e2fsck -fn /dev/nbd1
nbd-client -d /dev/nbd1 >/dev/null 2>&1
kill $S1 $S2 2>/dev/null
finish
"#;

#[test]
fn a_linux_guest_runs_on_thinly_volumes_and_a_live_snapshot_mounts() {
    if !harness::lab_ready() {
        return;
    }
    let Some(bin) = harness::require_thinly() else { return };
    let work = Work::new("kernel-nbd-host");
    let dir = work.path("pool");
    let d = dir.to_str().unwrap();
    harness::thinly(&bin, &["pool", "create", "--pool", d, "--size", "1G"]);
    harness::thinly(&bin, &["create", "vol-a", "--size", "256M", "--pool", d]);
    harness::thinly(&bin, &["create", "vol-b", "--size", "128M", "--pool", d]);
    let socks = harness::socket_dir();
    let server = Server::start(&bin, &dir, &socks.path().join("nbd.sock"));
    let relay_b = PortRelay::start(&socks.path().join("b.sock"), &server.socket);
    let relay_s = PortRelay::start(&socks.path().join("s.sock"), &server.socket);
    let share = work.sub("share");

    // The host side of the snapshot: when the guest asks, snapshot vol-b while it writes.
    let (bin2, dir2, share2) = (bin.clone(), dir.clone(), share.clone());
    let snapper = std::thread::spawn(move || {
        let t0 = Instant::now();
        while !share2.join("snap-request").exists() {
            if t0.elapsed() > Duration::from_secs(400) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = std::process::Command::new(&bin2)
            .args(["snapshot", "vol-b", "snap-b", "--pool"])
            .arg(&dir2)
            .output()
            .expect("running thinly snapshot");
        let msg = format!(
            "host: thinly snapshot vol-b snap-b: exit {:?} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::fs::write(share2.join("snap-done"), format!("{msg}\n")).unwrap();
    });
    let mut guest = Guest::new()
        .fio()
        .nbd(&server.socket, "vol-a")
        .port(&relay_b.listen, "nbd0")
        .port(&relay_s.listen, "nbd1")
        .timeout(900);
    let mut script = String::new();
    if harness::heavy() {
        script.push_str("FIO_SIZE=192M\n");
        guest = guest.timeout(900);
    }
    script.push_str(GUEST);
    let run = guest.run(&share, "nbd-host.sh", &script);
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    let _ = snapper.join();
    run.expect_ok("the guest on thinly's NBD server");
    let done = std::fs::read_to_string(share.join("snap-done")).unwrap_or_default();
    assert!(done.contains("exit Some(0)"), "the snapshot was taken: {done}");
    server.stop();
    let meta = dir.join("metadata");
    if let Some((clean, out)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check after the guest:\n{out}");
    }
    let list = harness::thinly(&bin, &["list", "--pool", d]);
    println!("{list}");
    assert!(list.contains("snap-b"), "{list}");
}
