# Helpers for the kernel tests' guest scripts (the harness puts this file before each one).
# Results: OK/FAIL lines in $OUT (default /host/guest.out) and on the console.
set -u
OUT=${OUT:-/host/guest.out}
: > "$OUT"
FAILS=0
log() { echo "$*" | tee -a "$OUT"; }
ok() { log "OK   $*"; }
fail() { log "FAIL $*"; FAILS=$((FAILS + 1)); }
# check WHAT CMD...: runs CMD, an OK or FAIL line (with the output's tail) for WHAT
check() {
  what=$1; shift
  if "$@" >/tmp/check.out 2>&1; then ok "$what"; else fail "$what: $(tail -5 /tmp/check.out | tr '\n' ' ')"; fi
}
disk_by_serial() {
  for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
  done
  echo "no disk with serial $1" >&2; return 1
}
# dump_dev DEV IMAGE_DEV SEEK_MIB COUNT_MIB: copies a device into a scratch disk
dump_dev() { dd if="$1" of="$2" bs=1M seek="$3" count="$4" conv=notrunc 2>/dev/null; }
# wait_for FILE [SECONDS]: waits until FILE exists (the host answers through the share)
wait_for() {
  n=0; while [ ! -e "$1" ]; do sleep 0.2; n=$((n + 1)); [ $n -ge $((${2:-60} * 5)) ] && return 1; done; return 0
}
# The guest never has a network device: only lo may exist.
no_network() { [ "$(ls /sys/class/net | tr '\n' ' ')" = "lo " ]; }
finish() {
  check "no network device in the guest (only lo: $(ls /sys/class/net | tr '\n' ' '))" no_network
  log "guest: $FAILS failure(s)"; sync; exit $FAILS
}
