#!/usr/bin/env bash
# Runs thinly's whole test suite, first installing what the tests need when it is missing
# (Debian): the real thin-provisioning-tools, libnbd's clients, nbdkit, fio, qemu-utils, time,
# openssl, libssl-dev (the TLS tests and the openssl crate), python3
# (examples/incremental-backup.sh reads nbdinfo's JSON with it), e2fsprogs, xfsprogs and
# mount (losetup; the attach tests), and the kernel lab beside this checkout.
# As a user it uses sudo where root is needed; what
# it cannot prepare it skips loudly (the tests that need it then skip loudly too), unless CI
# is set, where that is an error. Arguments go to `cargo test`.
#
#   ./test.sh [--fast] [CARGO TEST ARGS...]
#
# After one build, two lanes run side by side: the kernel tests (the root package `thinly`,
# whose guests mostly wait on QEMU's emulated CPU; output in target/test-logs/kernel.log,
# shown at the end) and every other package (output live). --fast runs only the second
# lane and does not prepare the kernel lab.
set -euo pipefail
cd "$(dirname "$0")"
FAST=0
if [ "${1:-}" = "--fast" ]; then
  FAST=1
  shift
fi

ci() { [ -n "${CI:-}" ]; }
# Says loudly what is skipped and why; under CI it stops the run instead.
skip_loudly() {
  if ci; then
    echo "test.sh: ERROR (CI is set): $*" >&2
    exit 1
  fi
  echo >&2
  echo "*** test.sh: SKIPPING $*" >&2
  echo >&2
}
# Runs "$@" as root: directly, or through sudo when that works without a password prompt
# on a non-terminal. Fails (status 1) when neither is possible.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && { [ -t 0 ] || sudo -n true 2>/dev/null; }; then
    sudo "$@"
  else
    return 1
  fi
}

need=()
command -v thin_check >/dev/null 2>&1 || [ -x /usr/sbin/thin_check ] || need+=(thin-provisioning-tools)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v nbdkit >/dev/null 2>&1 || need+=(nbdkit)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null 2>&1 || need+=(python3-minimal)
# The TLS tests make certificates with the openssl command; the openssl crate links
# libssl (pkg-config finds it).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# thinly attach (tools/tests/attach.rs, layers.rs): nbdfuse comes with libnbd-bin above.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  if ! { as_root apt-get update -qq &&
         as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }; then
    skip_loudly "the installation of ${need[*]} (needs root or sudo); the tests that need them skip"
  fi
fi

# The kernel tests (tests/kernel.rs, one binary) boot the real Linux dm-thin and NBD client in a QEMU
# guest from the kernel lab; they skip loudly without it, and fail when CI is set. Prepare
# the lab (idempotent: 0.3 s when it is ready) where the kit exists beside this checkout.
# setup.sh needs root only to install its host packages; its downloads go to the user's cache.
LAB_SETUP="$PWD/../shared/kernel-lab/setup.sh"   # $(dirname "$0")/../shared/…: we cd'ed there above
LAB_CACHE="${THINLY_KERNEL_LAB:-$HOME/.cache/thinly-kernel-lab}"
if [ $FAST = 0 ] && [ -d "$(dirname "$LAB_SETUP")" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    "$LAB_SETUP"
  elif ! "$LAB_SETUP"; then
    echo "test.sh: the kernel lab's setup failed as $(id -un); trying it as root for the user's cache"
    if as_root env THINLY_KERNEL_LAB="$LAB_CACHE" "$LAB_SETUP" &&
       as_root chown -R "$(id -u):$(id -g)" "$LAB_CACHE"; then
      :
    else
      skip_loudly "the kernel lab (its setup needs root for its host packages: run $LAB_SETUP as root once); the kernel tests skip"
    fi
  fi
fi

if [ $FAST = 1 ]; then
  exec cargo test --workspace --exclude thinly "$@"
fi
# Build both lanes first, each as it will run: cargo resolves features for the packages a
# command selects, so `--workspace` would build a third variant of the shared crates that
# neither lane uses.
cargo test --workspace --exclude thinly --no-run
cargo test -p thinly --no-run
LOGS=target/test-logs
mkdir -p "$LOGS"
echo "test.sh: the kernel tests (cargo test -p thinly) run beside the others; output: $LOGS/kernel.log"
# Its own process group, so that an interrupted run stops its guests too.
setsid cargo test -p thinly "$@" >"$LOGS/kernel.log" 2>&1 &
KERNEL_LANE=$!
trap 'kill -- -$KERNEL_LANE 2>/dev/null || true' EXIT
rest=0
cargo test --workspace --exclude thinly "$@" || rest=$?
kernel=0
wait $KERNEL_LANE || kernel=$?
trap - EXIT
echo "=== the kernel tests (cargo test -p thinly) ==="
cat "$LOGS/kernel.log"
if [ $rest != 0 ] || [ $kernel != 0 ]; then
  echo "test.sh: FAILED (other packages: exit $rest; kernel tests: exit $kernel)" >&2
  exit 1
fi
