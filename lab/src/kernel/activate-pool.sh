#!/bin/bash
# Activates a thinly pool under the kernel lab's guest kernel (real dm-thin), by hand:
#
#   lab/src/kernel/activate-pool.sh POOL_DIR [GUEST_SCRIPT]
#
# Writes the guest form of `thinly kernel-script --guest POOL_DIR` into a share, attaches the
# pool's `metadata` and `data` files as virtio disks (found in the guest by serial), and in
# the guest: activates the pool (a thin-pool table with the pool's block size and low water
# mark, a thin table per volume from pool.json), prints `dmsetup status` and the md5 of every
# volume, sources GUEST_SCRIPT if given (it may use $POOL_NAME, $THIN_NAMES, $META, $DATA and
# the helpers of guest-lib.sh: log, ok, fail, check), tears down and runs thin_check.
# The pool must not be open in thinly meanwhile. Exit status: the guest's (0 = all OK).
# THINLY_BIN (default: thinly on PATH), THINLY_KERNEL_LAB_KIT (default: ../shared/kernel-lab
# beside the checkout) and run-guest.sh's THINLY_KERNEL_LAB apply.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
KIT=${THINLY_KERNEL_LAB_KIT:-$HERE/../../../../shared/kernel-lab}
THINLY=${THINLY_BIN:-thinly}
POOL=$(cd "$1" && pwd)
RUN=${THINLY_KERNEL_LAB:-$HOME/.cache/thinly-kernel-lab}/run
mkdir -p "$RUN"
SHARE=$(mktemp -d "$RUN/activate.XXXXXX")
"$THINLY" kernel-script --guest "$POOL" > "$SHARE/activate.sh"
if [ -n "${2:-}" ]; then cp "$2" "$SHARE/user.sh"; fi
{ cat "$HERE/guest-lib.sh"; cat <<'GUEST'
. /host/activate.sh
check "activate the pool" pool_activate
log "pool $POOL_NAME: $(dmsetup status $POOL_NAME)"
for n in $THIN_NAMES; do
  log "volume $n: $(blockdev --getsize64 /dev/mapper/$n) bytes, md5 $(md5sum < /dev/mapper/$n | cut -d' ' -f1)"
done
if [ -f /host/user.sh ]; then . /host/user.sh; fi
check "tear down" pool_deactivate
check "thin_check in the guest" thin_check $META
finish
GUEST
} > "$SHARE/session.sh"
set +e
"$KIT/run-guest.sh" -q -t 600 -w "$SHARE" -d "$POOL/metadata" -d "$POOL/data" "$SHARE/session.sh"
rc=$?
set -e
cat "$SHARE/guest.out" 2>/dev/null || true
if [ $rc = 0 ]; then rm -rf "$SHARE"; else echo "share kept: $SHARE" >&2; fi
exit $rc
