//! Translates an operation script into a shell script for the kernel lab's guest (busybox
//! sh, dmsetup, dd, blkdiscard), so that the guest kernel's dm-thin runs the same workload
//! as [`super::runner`].
//!
//! The guest formats a fresh pool on two disks found by serial (`error_if_no_space`, so a
//! write to a full pool fails at once, as thinly's `OutOfSpacePolicy::Error` does), keeps a
//! `thin` device active for every thin device, and runs each operation:
//! - `create_thin` → `dmsetup message POOL 0 "create_thin ID"`, then activates it;
//! - `create_snap` → suspends the origin, `create_snap`, resumes it, activates the snapshot;
//! - `write` → `dd oflag=direct` of a payload file (the host writes the bytes);
//! - `discard` → `blkdiscard -o OFFSET -l LEN`;
//! - `delete` → removes the device, then `delete`;
//! - `commit` → `reserve_metadata_snap` and `release_metadata_snap` (the kernel commits
//!   after every pool message).
//!
//! Each outcome goes to `results.txt` ("LINE ok" or "LINE fail MESSAGE"). At the end the
//! guest copies every device that should exist into a scratch disk (the host takes
//! per-block checksums of it), saves `dmsetup status`, tears everything down and runs
//! thin_check on the metadata. The guest script fails only when the harness itself fails.

use super::observe::{dump_layout, DumpSlot};
#[cfg(test)]
use super::opscript::Pattern;
use super::opscript::{Op, Script};
use super::{disk_serial, sh_quote};

/// The names a guest run uses.
#[derive(Debug, Clone)]
pub struct GuestNames {
    /// Prefix of the device-mapper names (pool `<prefix>-pool`, thin `<prefix>-t<ID>`).
    pub prefix: String,
    /// File names of the disks on the host (their serials find them in the guest).
    pub meta_file: String,
    pub data_file: String,
    pub scratch_file: String,
    /// The directory in the guest that holds the payloads and takes the results
    /// (e.g. `/host/s1`).
    pub dir: String,
}

/// A translated script.
#[derive(Debug, Clone)]
pub struct GuestPlan {
    pub script: String,
    /// (file name in `dir`, bytes) of every write.
    pub payloads: Vec<(String, Vec<u8>)>,
    /// Where each final device lands in the scratch disk.
    pub slots: Vec<DumpSlot>,
    /// How large the scratch disk must be.
    pub scratch_bytes: u64,
}

/// The largest power of two ≤ 1 MiB dividing both (a dd block size).
fn dd_bs(offset: u64, len: u64) -> u64 {
    let mut bs = 1 << 20;
    while !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
        bs /= 2;
    }
    bs
}

/// Translates `script` for the guest (see the module's comment).
pub fn guest_plan(script: &Script, n: &GuestNames) -> GuestPlan {
    let mut s = prologue(script, n);
    let mut payloads = Vec::new();
    for step in &script.steps {
        let l = step.line;
        match &step.op {
            Op::CreateThin { id } => s.push_str(&format!("run {l} create_thin {id}\n")),
            Op::CreateSnap { id, origin } => {
                s.push_str(&format!("run {l} create_snap {id} {origin}\n"))
            }
            Op::Write { dev, offset, len, pattern } => {
                let file = format!("p{l}.bin");
                let bs = dd_bs(*offset, *len);
                s.push_str(&format!("run {l} wr {dev} {file} {bs} {} {}\n", offset / bs, len / bs));
                payloads.push((file, pattern.bytes(*offset, *len)));
            }
            Op::Discard { dev, offset, len } => {
                s.push_str(&format!("run {l} discard {dev} {offset} {len}\n"))
            }
            Op::Delete { dev } => s.push_str(&format!("run {l} delete {dev}\n")),
            Op::Commit => s.push_str(&format!("run {l} commit\n")),
            Op::SetTransactionId { old, new } => {
                s.push_str(&format!("run {l} set_transaction_id {old} {new}\n"))
            }
        }
    }
    let g = &script.geometry;
    let devs: Vec<(u64, u64)> =
        script.final_devices().into_iter().map(|d| (d, g.thin_size_bytes)).collect();
    let slots = dump_layout(&devs);
    let scratch_bytes = slots.last().map_or(1 << 20, |s| s.offset_bytes + s.len_bytes);
    s.push_str(&epilogue(&slots, &n.prefix));
    GuestPlan { script: s, payloads, slots, scratch_bytes }
}

/// Finds the disks, formats the pool, defines one shell function per operation.
fn prologue(script: &Script, n: &GuestNames) -> String {
    let g = &script.geometry;
    let p = &n.prefix;
    let mut s = format!(
        "# operation script {:?}, translated for the guest kernel by thinly\nset -u\nD={}\n",
        script.name,
        sh_quote(&n.dir)
    );
    s.push_str(
        "disk_by_serial() {\n  for b in /sys/block/vd*; do\n    \
         [ \"$(cat \"$b/serial\" 2>/dev/null)\" = \"$1\" ] && { echo \"/dev/${b##*/}\"; return 0; }\n  \
         done\n  echo \"no disk with serial $1\" >&2; return 1\n}\n",
    );
    for (var, file) in
        [("META", &n.meta_file), ("DATA", &n.data_file), ("SCRATCH", &n.scratch_file)]
    {
        s.push_str(&format!(
            "{var}=$(disk_by_serial {}) || exit 2\n",
            sh_quote(&disk_serial(file))
        ));
    }
    s.push_str(&format!(
        "POOL={p}-pool\nTS={}\n: > $D/results.txt\n\
         dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync 2>/dev/null || exit 2\n\
         dmsetup create $POOL --table \"0 {} thin-pool $META $DATA {} 0 1 error_if_no_space\" || exit 2\n",
        g.thin_size_bytes / 512,
        g.nr_data_blocks * g.block_sectors() as u64,
        g.block_sectors()
    ));
    s.push_str(&format!(
        r#"run() {{ n=$1; shift; if "$@" >/tmp/op.out 2>&1; then echo "$n ok" >> $D/results.txt; else echo "$n fail $(tr '\n' ' ' </tmp/op.out | cut -c1-200)" >> $D/results.txt; fi; }}
activate() {{ dmsetup create {p}-t$1 --table "0 $TS thin /dev/mapper/$POOL $1"; }}
create_thin() {{ dmsetup message $POOL 0 "create_thin $1" && activate $1; }}
create_snap() {{ dmsetup suspend {p}-t$2 || return 1; dmsetup message $POOL 0 "create_snap $1 $2"; rc=$?; dmsetup resume {p}-t$2 || rc=1; [ $rc = 0 ] && activate $1; }}
wr() {{ dd if=$D/$2 of=/dev/mapper/{p}-t$1 bs=$3 seek=$4 count=$5 oflag=direct conv=notrunc; }}
discard() {{ blkdiscard -o $2 -l $3 /dev/mapper/{p}-t$1; }}
delete() {{ dmsetup remove {p}-t$1 && dmsetup message $POOL 0 "delete $1"; }}
commit() {{ dmsetup message $POOL 0 reserve_metadata_snap && dmsetup message $POOL 0 release_metadata_snap; }}
set_transaction_id() {{ dmsetup message $POOL 0 "set_transaction_id $1 $2"; }}
"#
    ));
    s
}

/// Saves the pool's status, copies every final device into the scratch disk, tears down,
/// runs thin_check.
fn epilogue(slots: &[DumpSlot], p: &str) -> String {
    let mut s = String::from(
        "sync\ndmsetup status $POOL > $D/pool-status.txt 2>&1\necho 3 > /proc/sys/vm/drop_caches\n",
    );
    for sl in slots {
        s.push_str(&format!(
            "dd if=/dev/mapper/{p}-t{} of=$SCRATCH bs=1M seek={} count={} conv=notrunc 2>/dev/null || echo \"dump of device {} failed\" >> $D/dump-errors.txt\n",
            sl.dev_id,
            sl.offset_bytes >> 20,
            sl.len_bytes >> 20,
            sl.dev_id
        ));
    }
    s.push_str(&format!(
        "for d in $(dmsetup ls | awk '{{print $1}}' | grep '^{p}-t'); do dmsetup remove $d || exit 2; done\n\
         dmsetup remove $POOL || exit 2\n\
         thin_check $META > $D/thin_check.txt 2>&1; echo \"exit $?\" >> $D/thin_check.txt\n\
         sync\nexit 0\n"
    ));
    s
}

/// Reads `results.txt` as written by the guest: line → (ok, message).
pub fn parse_results(text: &str) -> Vec<(usize, bool, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.splitn(3, ' ');
            let line = w.next()?.parse().ok()?;
            let ok = w.next()? == "ok";
            Some((line, ok, w.next().unwrap_or("").to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_becomes_dmsetup_messages_dd_and_blkdiscard() {
        let s = Script::parse(
            "t",
            "pool data_blocks=64 thin_size=2m\ncreate_thin 0\nwrite 0 4096 8192 a\n\
             create_snap 1 0\ndiscard 1 0 1m\ndelete 0\ncommit\n",
        )
        .unwrap();
        let names = GuestNames {
            prefix: "x".into(),
            meta_file: "x-meta".into(),
            data_file: "x-data".into(),
            scratch_file: "x-dump".into(),
            dir: "/host/x".into(),
        };
        let plan = guest_plan(&s, &names);
        for want in [
            "dmsetup create $POOL --table \"0 8192 thin-pool $META $DATA 128 0 1 error_if_no_space\"",
            "run 2 create_thin 0\n",
            "run 3 wr 0 p3.bin 4096 1 2\n",
            "run 4 create_snap 1 0\n",
            "run 5 discard 1 0 1048576\n",
            "run 6 delete 0\n",
            "run 7 commit\n",
            "dd if=/dev/mapper/x-t1 of=$SCRATCH bs=1M seek=0 count=2",
            "thin_check $META",
        ] {
            assert!(plan.script.contains(want), "{want:?} not in\n{}", plan.script);
        }
        assert_eq!(
            plan.payloads,
            vec![("p3.bin".to_string(), Pattern::Seed("a".into()).bytes(4096, 8192))]
        );
        assert_eq!(plan.scratch_bytes, 2 << 20);
        assert_eq!(
            parse_results("2 ok\n3 fail dd: No space\n"),
            vec![(2, true, String::new()), (3, false, "dd: No space".to_string())]
        );
    }
}
