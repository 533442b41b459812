//! Step 6 of the layer flow: the real dm-thin activates the same pool. The stopped pool's
//! `metadata` and `data` files become the kernel lab guest's disks; the guest activates
//! them with the tables `thinly kernel-script --guest` prints, mounts the top layer and a
//! container read-only (`ro,noload`: nothing written, not even a journal replay), and
//! checks each against the manifest the test's model predicts (sha256 of every file, and
//! mode, size and path of every file, no more, no fewer); then tears down and runs the
//! guest's thin_check. Skips loudly without the lab (fails under `CI`). One guest boot.

use super::{expected, Image};
use std::path::Path;
use thinly_lab::kernel::harness::{self, Guest, Work};

const GUEST: &str = r#"
. /host/activate.sh
check "the kernel activates thinly's layer pool" pool_activate
for v in $VOLS; do
  mkdir -p /mnt/$v
  check "mount $v read-only under dm-thin" mount -o ro,noload /dev/mapper/$v /mnt/$v
  check "$v: the sha256 of every file" sh -c "cd /mnt/$v && sha256sum -c -s /host/$v.sha256"
  (cd /mnt/$v && find . -type f ! -path './lost+found/*' | sed 's|^\./||' | while read -r f; do
    stat -c "%a %s $f" "$f"; done) | sort > /tmp/$v.list
  sort /host/$v.list > /tmp/$v.want
  check "$v: the same files with the same modes and sizes" cmp /tmp/$v.want /tmp/$v.list
  check "umount $v" umount /mnt/$v
done
check "tear down" pool_deactivate
check "thin_check in the guest" thin_check $META
finish
"#;

/// Boots the guest on the stopped pool at `pool` and checks `vols` (names in `images`).
pub fn kernel_mounts_match_the_manifest(
    bin: &Path,
    pool: &Path,
    images: &[(String, Image)],
    vols: &[&str],
) {
    if !harness::lab_ready() {
        return;
    }
    let work = Work::new("layers-kernel");
    let share = work.sub("share");
    let p = pool.to_str().expect("UTF-8 path");
    let activate = harness::thinly(bin, &["kernel-script", "--guest", p]);
    std::fs::write(share.join("activate.sh"), activate).expect("activate.sh");
    for v in vols {
        let img = &images.iter().find(|(n, _)| n == v).expect("a volume of the flow").1;
        let (mut sums, mut list) = (String::new(), String::new());
        for (path, (mode, size, sha)) in expected(img) {
            sums.push_str(&format!("{sha}  {path}\n"));
            list.push_str(&format!("{mode:o} {size} {path}\n"));
        }
        std::fs::write(share.join(format!("{v}.sha256")), sums).expect("manifest");
        std::fs::write(share.join(format!("{v}.list")), list).expect("file list");
    }
    let script = format!("VOLS='{}'\n{GUEST}", vols.join(" "));
    let run = Guest::new().disk(&pool.join("metadata")).disk(&pool.join("data")).timeout(600).run(
        &share,
        "layers-kernel.sh",
        &script,
    );
    print!("{}", std::fs::read_to_string(share.join("guest.out")).unwrap_or_default());
    run.expect_ok("the kernel's dm-thin mounting thinly's layers");
}
