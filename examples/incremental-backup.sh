#!/usr/bin/env bash
# Incremental backup of a thinly volume over NBD, the way qemu-based backup tools do it:
#
#   1. snapshot the volume (s1) and copy the whole snapshot with nbdcopy: the full backup;
#   2. later, snapshot again (s2) and ask thinly which extents changed since s1: the
#      meta context qemu:dirty-bitmap:s1 of export s2 (nbdinfo --map … --json);
#   3. copy only those extents from s2 onto the backup (qemu-img convert -n, windowed);
#   4. the backup now equals s2 (cmp), having copied a fraction of the volume.
#
# Everything runs in a temporary pool served on a unix socket; the server is stopped at
# the end. Needs: thinly (THINLY=path, default `thinly` on PATH), qemu-io, qemu-img,
# nbdcopy, nbdinfo, python3.
#
#   examples/incremental-backup.sh [WORKDIR]

set -euo pipefail

THINLY=${THINLY:-thinly}
WORK=${1:-$(mktemp -d)}
POOL=$WORK/pool
SOCK=$POOL/nbd.sock
SERVER=

cleanup() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
}
trap cleanup EXIT

uri() { echo "nbd+unix:///$1?socket=$SOCK"; }
io() { qemu-io -f raw "$(uri vm)" "$@" >/dev/null; }

"$THINLY" pool create --pool "$POOL" --size 1G >/dev/null
"$THINLY" create --pool "$POOL" --size 64M vm >/dev/null
"$THINLY" serve --pool "$POOL" --listen none 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 1 300); do
    [ -S "$SOCK" ] && break
    sleep 0.1
done
[ -S "$SOCK" ] || { echo "thinly serve did not start" >&2; exit 1; }

# Day 1: some data, a snapshot, a full copy of the snapshot.
io -c "write -P 0x11 0 8M" -c "write -P 0x22 20M 3M" -c "write -P 0x33 60M 4M"
"$THINLY" snapshot --pool "$POOL" --read-only vm s1 >/dev/null
nbdcopy "$(uri s1)" "$WORK/backup.img"

# Day 2: the volume changes (partial-block writes, a discard, zeroes), another snapshot.
io -c "write -P 0x44 100000 5000" -c "discard 20M 1M" -c "write -z 61M 128k" \
   -c "write -P 0x55 40M 2M" -c "write -P 0x66 67000000 100"
"$THINLY" snapshot --pool "$POOL" --read-only vm s2 >/dev/null

# The extents of s2 that differ from s1, as (offset, length) lines.
nbdinfo --map=qemu:dirty-bitmap:s1 --json "$(uri s2)" >"$WORK/map.json"
python3 - "$WORK/map.json" >"$WORK/dirty.txt" <<'PY'
import json, sys
for e in json.load(open(sys.argv[1])):
    if e["type"] & 1:
        print(e["offset"], e["length"])
PY

# Copy just those extents onto the backup: qemu's raw driver windows both sides to the
# extent (offset=, size=), qemu-img convert -n copies the window in place.
copied=0
while read -r off len; do
    qemu-img convert -n \
        --image-opts "driver=raw,offset=$off,size=$len,file.driver=nbd,file.server.type=unix,file.server.path=$SOCK,file.export=s2" \
        --target-image-opts "driver=raw,offset=$off,size=$len,file.driver=file,file.filename=$WORK/backup.img" \
        </dev/null
    copied=$((copied + len))
done <"$WORK/dirty.txt"

nbdcopy "$(uri s2)" "$WORK/s2.img"
cmp "$WORK/backup.img" "$WORK/s2.img"
echo "backup equals s2: copied $copied of $(stat -c %s "$WORK/s2.img") bytes in $(wc -l <"$WORK/dirty.txt") extents"
