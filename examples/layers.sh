#!/usr/bin/env bash
# The container-image layer flow of Docker's devicemapper driver, on thinly, on real ext4:
# a 10 GiB base volume, five layers (each a snapshot of the one below, changed), three
# containers (a snapshot of the top layer each, written differently); every volume is
# checked with e2fsck -fn and against the manifest (path, mode, size, sha256) recorded
# when it was built; then a middle layer and a container are deleted, the rest checked
# again, and the stopped pool's metadata goes through thin_check.
#
# Usage (as root; needs nbdfuse, losetup, mkfs.ext4, e2fsck; thin_check if installed):
#   examples/layers.sh [POOL_DIR] [SEED]
# THINLY names the thinly binary (default: `thinly` on PATH, else target/{release,debug}).
# The pool directory must not exist yet; it is left behind for a look (`thinly list`).
set -euo pipefail

POOL=${1:-./layers-pool}
SEED=${2:-17}
here=$(cd "$(dirname "$0")/.." && pwd)
THINLY=${THINLY:-$(command -v thinly || ls "$here"/target/{release,debug}/thinly 2>/dev/null | head -1)}
[ -x "$THINLY" ] || { echo "layers.sh: no thinly binary (cargo build, or set THINLY)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "layers.sh: needs root (loop devices, mounts)" >&2; exit 1; }
[ ! -e "$POOL" ] || { echo "layers.sh: $POOL exists; give a new pool directory" >&2; exit 1; }

t() { "$THINLY" "$@" --pool "$POOL"; }
work=$(mktemp -d)
server=""
mnt="$work/mnt"
mkdir -p "$mnt" "$work/manifests"

cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  if [ -f "$POOL/attachments.json" ]; then
    for v in $(grep -o '"volume": "[^"]*"' "$POOL/attachments.json" | cut -d'"' -f4); do
      t detach "$v" --force || true
    done
  fi
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" || true
  rm -rf "$work"
}
trap cleanup EXIT

# (path mode size sha256) of every regular file under the mount, sorted.
manifest() {
  (cd "$mnt" && find . -path ./lost+found -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    while IFS= read -r f; do
      printf '%s %s %s %s\n' "$f" "$(stat -c %a "$f")" "$(stat -c %s "$f")" \
        "$(sha256sum < "$f" | cut -d' ' -f1)"
    done)
}

# N bytes that depend only on the seed's sequence ($RANDOM), not on /dev/urandom.
bytes() { { yes "$RANDOM $RANDOM $RANDOM" || true; } | head -c "$1"; }

# One layer's changes, from $RANDOM (seeded): add, modify, delete, rename, hard link,
# a 256 MiB sparse file, permissions.
apply_layer() {
  local tag=$1 i f files
  mkdir -p "$mnt/$tag" "$mnt/common"
  for i in $(seq 1 20); do
    bytes $((RANDOM * 2)) > "$mnt/$tag/f$i"
  done
  mapfile -t files < <(cd "$mnt" && find . -path ./lost+found -prune -o -type f -links 1 -printf '%P\n' | LC_ALL=C sort)
  pick() { echo "${files[$((RANDOM % ${#files[@]}))]}"; }
  f=$(pick); echo "changed by $tag" >> "$mnt/$f"
  f=$(pick); [ -e "$mnt/$f" ] && rm "$mnt/$f"
  f=$(pick); [ -e "$mnt/$f" ] && mv "$mnt/$f" "$mnt/common/$tag-renamed"
  f=$(pick); [ -e "$mnt/$f" ] && ln "$mnt/$f" "$mnt/$tag/hardlink"
  truncate -s 256M "$mnt/$tag/sparse"
  bytes 65536 | dd of="$mnt/$tag/sparse" bs=64K seek=$((RANDOM % 4096)) conv=notrunc status=none
  bytes 4096 > "$mnt/$tag/private"; chmod 0600 "$mnt/$tag/private"
  bytes 4096 > "$mnt/$tag/tool"; chmod 0755 "$mnt/$tag/tool"
  f=$(pick); [ -e "$mnt/$f" ] && chmod 0444 "$mnt/$f"
  true
}

# build FROM TO: snapshot, attach, mount, change, record the manifest, unmount, detach.
build() {
  t snapshot "$1" "$2"
  dev=$(t attach "$2")
  mount -o noinit_itable "$dev" "$mnt"
  apply_layer "$2"
  manifest > "$work/manifests/$2"
  umount "$mnt"
  t detach "$2"
  echo "built $2 from $1 ($(wc -l < "$work/manifests/$2") files)"
}

# verify VOLUME: attach, e2fsck -fn, mount read-only, compare with the manifest.
verify() {
  dev=$(t attach "$1")
  e2fsck -fn "$dev" > "$work/e2fsck.log" 2>&1 || { cat "$work/e2fsck.log" >&2; exit 1; }
  mount -o ro,noload "$dev" "$mnt"
  diff <(manifest) "$work/manifests/$1"
  umount "$mnt"
  t detach "$1"
  echo "verified $1"
}

"$THINLY" pool create --pool "$POOL" --size 8G
"$THINLY" serve --pool "$POOL" --listen none 2> "$work/serve.log" &
server=$!
for _ in $(seq 100); do [ -S "$POOL/control.sock" ] && break; sleep 0.1; done

RANDOM=$SEED
t create base --size 10G
dev=$(t attach base)
mkfs.ext4 -q "$dev"
mount "$dev" "$mnt"; manifest > "$work/manifests/base"; umount "$mnt"
t detach base
prev=base
for i in 1 2 3 4 5; do build "$prev" "layer$i"; prev="layer$i"; done
for j in 1 2 3; do build layer5 "container$j"; done
vols="base layer1 layer2 layer3 layer4 layer5 container1 container2 container3"
for v in $vols; do verify "$v"; done

t delete layer3 --force   # layer4 was snapshotted from it: a guardrail refuses without --force
t delete container2
for v in base layer1 layer2 layer4 layer5 container1 container3; do verify "$v"; done
t list
t status

kill "$server"; wait "$server" || true; server=""
"$THINLY" check "$POOL/metadata"
if command -v thin_check > /dev/null; then thin_check "$POOL/metadata"; fi
echo "layers.sh: all layers and containers verified; the pool is in $POOL"
