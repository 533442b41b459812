#!/usr/bin/env bash
# Runs thinly's whole test suite, first installing what the tests need when it is missing
# (Debian): the real thin-provisioning-tools, libnbd's clients, nbdkit, fio, qemu-utils, and
# e2fsprogs, xfsprogs and mount (losetup) for the attach tests.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v thin_check >/dev/null 2>&1 || need+=(thin-provisioning-tools)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v nbdkit >/dev/null 2>&1 || need+=(nbdkit)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
[ -x /usr/bin/time ] || need+=(time)
# thinly attach (tools/tests/attach.rs, layers.rs): nbdfuse comes with libnbd-bin above.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The kernel tests (tests/kernel_*.rs) boot the real Linux dm-thin and NBD client in a QEMU
# guest from the kernel lab; they skip loudly without it, and fail when CI is set. Prepare
# the lab (idempotent: 0.3 s when it is ready) where the kit exists beside this checkout.
LAB_SETUP="$PWD/../shared/kernel-lab/setup.sh"   # $(dirname "$0")/../shared/…: we cd'ed there above
if [ -d "$(dirname "$LAB_SETUP")" ]; then
  "$LAB_SETUP"
fi

cargo test --workspace "$@"
