//! The guest kernel creates a pool (128 KiB blocks) and writes it: patterns, a snapshot
//! with copy-on-write, ext4 on a volume, a deleted device. thinly opens it (no pool.json:
//! the devices become volumes `thin<ID>`), reads the kernel's bytes, and serves it with
//! `thinly serve`; a second guest checks the ext4 file system through QEMU's NBD client and
//! reads another volume through the kernel's nbd-client. Two guest boots.

use thinly_lab::kernel::harness;

use harness::{Guest, PortRelay, Server, Work};
use thinly_engine::io::IoMode;
use thinly_engine::pool::Pool;
use thinly_lab::kernel::observe::{block_sum, dump_layout, reader_view_from_dump};
use thinly_lab::kernel::opscript::Pattern;

const BS: u64 = 128 << 10;
const MIB: u64 = 1 << 20;
/// The kernel's devices: (id, size).
const DEVS: &[(u64, u64)] = &[(0, 16 * MIB), (1, 64 * MIB), (2, 16 * MIB)];

const KERNEL_SCRIPT: &str = r#"
META=$(disk_by_serial metadata); DATA=$(disk_by_serial data); SCRATCH=$(disk_by_serial dump)
dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync 2>/dev/null
check "the kernel creates a pool" dmsetup create kpool --table "0 $(blockdev --getsz $DATA) thin-pool $META $DATA 256 0"
dmsetup message kpool 0 "create_thin 0"
check "thin 0" dmsetup create thin0 --table "0 32768 thin /dev/mapper/kpool 0"
check "patterns on thin 0" dd if=/host/p0.bin of=/dev/mapper/thin0 bs=65536 seek=0 oflag=direct conv=notrunc
check "patterns on thin 0 (2)" dd if=/host/p1.bin of=/dev/mapper/thin0 bs=512 seek=20001 count=300 oflag=direct conv=notrunc
dmsetup suspend thin0; dmsetup message kpool 0 "create_snap 2 0"; dmsetup resume thin0
check "snapshot 2" dmsetup create thin2 --table "0 32768 thin /dev/mapper/kpool 2"
check "copy-on-write on the snapshot" dd if=/host/p2.bin of=/dev/mapper/thin2 bs=4096 seek=100 oflag=direct conv=notrunc
check "copy-on-write on the origin" dd if=/host/p3.bin of=/dev/mapper/thin0 bs=512 seek=7 oflag=direct conv=notrunc
dmsetup message kpool 0 "create_thin 1"
check "thin 1" dmsetup create thin1 --table "0 131072 thin /dev/mapper/kpool 1"
check "mkfs.ext4 on thin 1" mkfs.ext4 -q -F /dev/mapper/thin1
mkdir -p /mnt/e; check "mount" mount /dev/mapper/thin1 /mnt/e
echo "hello from the kernel" > /mnt/e/hello.txt; mkdir /mnt/e/dir
dd if=/dev/urandom of=/mnt/e/dir/random bs=1M count=6 2>/dev/null; cp /host/p0.bin /mnt/e/p0.bin
(cd /mnt/e && md5sum hello.txt dir/random p0.bin) > /host/ext4.md5
check "umount" umount /mnt/e
check "e2fsck on the kernel" e2fsck -fn /dev/mapper/thin1
dmsetup message kpool 0 "create_thin 3"
dmsetup create thin3 --table "0 32768 thin /dev/mapper/kpool 3"
dd if=/host/p0.bin of=/dev/mapper/thin3 bs=65536 oflag=direct 2>/dev/null
dmsetup remove thin3; check "delete thin 3" dmsetup message kpool 0 "delete 3"
md5sum /dev/mapper/thin0 | cut -d' ' -f1 > /host/thin0.md5
echo 3 > /proc/sys/vm/drop_caches
check "dump thin0" dump_dev /dev/mapper/thin0 $SCRATCH 0 16
check "dump thin1" dump_dev /dev/mapper/thin1 $SCRATCH 16 64
check "dump thin2" dump_dev /dev/mapper/thin2 $SCRATCH 80 16
log "pool status: $(dmsetup status kpool)"
for d in thin2 thin1 thin0 kpool; do dmsetup remove $d; done
check "thin_check in the guest" thin_check $META
finish
"#;

const NBD_SCRIPT: &str = r#"
NBDDISK=
for b in /sys/block/vd*; do case "$(cat $b/serial)" in nbd*) NBDDISK=/dev/${b##*/};; esac; done
[ -n "$NBDDISK" ] || { fail "no NBD disk"; finish; }
log "thin1 through QEMU's NBD client: $NBDDISK, $(blockdev --getsize64 $NBDDISK) bytes"
check "e2fsck of the kernel's ext4, served by thinly" e2fsck -fn $NBDDISK
mkdir -p /mnt/e; check "mount it" mount $NBDDISK /mnt/e
check "the kernel's files read back" sh -c 'cd /mnt/e && md5sum -c /host/ext4.md5'
echo "written through thinly" > /mnt/e/thinly.txt
check "umount" umount /mnt/e
check "e2fsck after a write through thinly" e2fsck -fn $NBDDISK
# thin0 through the guest kernel's nbd-client over a virtio-serial port (the host relay
# connects to thinly when it sees CONNECT). The port stays open from the CONNECT line on:
# the guest's virtio_console driver drops what arrives while no one holds it open.
exec 3<>/dev/virtio-ports/nbd0
echo CONNECT >&3
socat UNIX-LISTEN:/run/nbd.sock FD:3 & SOCAT=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/nbd.sock ] && break; sleep 0.2; done
check "nbd-client connects to thin0" nbd-client -u /run/nbd.sock /dev/nbd0 -N thin0
got=$(dd if=/dev/nbd0 bs=1M count=16 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$(cat /host/thin0.md5)" ] && ok "thin0 through nbd-client has the kernel's bytes" || fail "thin0 md5 $got, want $(cat /host/thin0.md5)"
nbd-client -d /dev/nbd0 >/dev/null 2>&1; kill $SOCAT 2>/dev/null
finish
"#;

#[test]
fn thinly_opens_and_serves_a_pool_the_kernel_made() {
    if !harness::lab_ready() {
        return;
    }
    let Some(bin) = harness::require_thinly() else { return };
    let work = Work::new("kernel-kernel-pool");
    let dir = work.sub("pool");
    let (meta, data, scratch) = (dir.join("metadata"), dir.join("data"), work.path("dump"));
    harness::sparse_file(&meta, 8 * MIB);
    harness::sparse_file(&data, 2048 * BS);
    let slots = dump_layout(DEVS);
    harness::sparse_file(&scratch, 96 * MIB);
    let share = work.sub("share");
    let p = |w: &str, off: u64, len: u64| Pattern::Seed(w.into()).bytes(off, len);
    std::fs::write(share.join("p0.bin"), p("k0", 0, 3 * MIB)).unwrap();
    std::fs::write(share.join("p1.bin"), p("k1", 20001 * 512, 300 * 512)).unwrap();
    std::fs::write(share.join("p2.bin"), p("k2", 100 * 4096, 4096)).unwrap();
    std::fs::write(share.join("p3.bin"), p("k3", 7 * 512, 512)).unwrap();
    let run = Guest::new().disk(&meta).disk(&data).disk(&scratch).run(
        &share,
        "kernel-pool.sh",
        KERNEL_SCRIPT,
    );
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    run.expect_ok("the kernel making a pool");

    if let Some((clean, out)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check of the kernel's pool:\n{out}");
    }
    assert!(harness::engine_check(&meta).is_empty(), "{:?}", harness::engine_check(&meta));
    // `thinly kernel-script` on it (no pool.json): the kernel's devices as thin<ID>, the
    // pool's 256-sector blocks.
    let act = thinly_engine::kernel::activate::Activation::from_pool_dir(&dir, &Default::default())
        .unwrap();
    let names: Vec<&str> = act.thins.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["thin0", "thin1", "thin2"]);
    assert_eq!((act.pool.block_sectors, act.pool.nr_data_blocks), (256, 2048));
    // thinly opens it: no pool.json, so devices 0, 1, 2 become volumes thin0, thin1, thin2.
    let kernel_view = reader_view_from_dump(&scratch, &slots, BS).unwrap();
    {
        let pool = Pool::open(&dir, IoMode::Auto).expect("thinly opens the kernel's pool");
        let names: Vec<String> = pool.list().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["thin0", "thin1", "thin2"], "volumes named after the kernel's devices");
        assert_eq!(pool.data_block_size_bytes(), BS);
        for &(id, size) in DEVS {
            let vol = pool.volume(&format!("thin{id}")).unwrap();
            assert!(vol.size_bytes() >= size);
            let mut buf = vec![0u8; size as usize];
            vol.read(0, &mut buf).unwrap();
            let sums: Vec<u64> = buf.chunks(BS as usize).map(block_sum).collect();
            let bad: Vec<usize> =
                (0..sums.len()).filter(|&i| sums[i] != kernel_view[&id][i]).collect();
            assert!(
                bad.is_empty(),
                "thinly reads thin{id} differently from the kernel at blocks {bad:?}"
            );
        }
        println!("thinly's status of the kernel's pool: {}", pool.status());
        pool.close().unwrap();
    }
    assert!(dir.join("pool.json").exists(), "opening wrote pool.json");

    // thinly serves it; a guest checks the ext4 through QEMU's NBD client and reads thin0
    // through its kernel's nbd-client.
    let socks = harness::socket_dir();
    let server = Server::start(&bin, &dir, &socks.path().join("nbd.sock"));
    let relay = PortRelay::start(&socks.path().join("port.sock"), &server.socket);
    let share2 = work.sub("share2");
    std::fs::copy(share.join("ext4.md5"), share2.join("ext4.md5")).unwrap();
    std::fs::copy(share.join("thin0.md5"), share2.join("thin0.md5")).unwrap();
    let run = Guest::new().nbd(&server.socket, "thin1").port(&relay.listen, "nbd0").run(
        &share2,
        "kernel-pool-nbd.sh",
        NBD_SCRIPT,
    );
    print!("{}", std::fs::read_to_string(share2.join("guest.out")).unwrap_or_default());
    run.expect_ok("the guest on thinly's NBD exports of the kernel's pool");
    server.stop();
    if let Some((clean, out)) = harness::real_thin_check(&meta) {
        assert!(clean, "thin_check after serving:\n{out}");
    }
}
