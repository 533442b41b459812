# One power-loss round (tests/kernel/power_loss.rs): `thinly serve` inside the guest on a
# pool in an ext4 filesystem on a virtio disk; the kernel's nbd-client writes 4 KiB blocks to
# vol0 with O_DIRECT, flushes, snapshots and deletes snapshots, until the host cuts the power.
# Every event is appended to /host/events (9p with cache=none: it is on the host before the
# write returns), an intent before each operation and its acknowledgement after it:
#   I SEQ BLOCK     write SEQ (its bytes say seq and block) is about to be issued
#   D SEQ           a flush completed after write SEQ: every write up to SEQ is durable
#   s NAME SEQ      snapshot NAME of vol0 is asked for after write SEQ completed
#   S NAME SEQ      ... and acknowledged
#   x NAME / X NAME deleting snapshot NAME is asked for / acknowledged
. /host/round.env          # SEED, NR_BLOCKS, FLUSH_EVERY, SNAP_EVERY, DELETE_EVERY
EV=/host/events
DISK=$(disk_by_serial disk.img) || exit 1
mkdir -p /mnt/p && mount "$DISK" /mnt/p || { echo "mounting the pool's filesystem failed"; exit 1; }
T=/host/thinly
$T serve --pool /mnt/p/pool --listen none --socket /run/nbd.sock >/host/serve.log 2>&1 &
for _ in $(seq 100); do [ -S /run/nbd.sock ] && break; sleep 0.2; done
nbd-client -u /run/nbd.sock /dev/nbd0 -N vol0 -b 4096 >/host/nbd-client.log 2>&1 \
  || { echo "nbd-client failed"; exit 1; }
x=$SEED
rnd() { x=$(( (x * 1103515245 + 12345) % 2147483648 )); }
touch /host/started
i=0; oldest=""; snaps=""
while :; do
  i=$((i + 1))
  rnd; blk=$(( (x / 65536) % NR_BLOCKS ))
  echo "I $i $blk" >> $EV
  yes "thinly-power-loss seq=$i block=$blk" | head -c 4096 \
    | dd of=/dev/nbd0 bs=4096 seek=$blk oflag=direct 2>/dev/null || { echo "write $i failed"; exit 1; }
  if [ $((i % FLUSH_EVERY)) = 0 ]; then
    dd if=/dev/null of=/dev/nbd0 count=0 conv=fsync 2>/dev/null && echo "D $i" >> $EV
  fi
  if [ $((i % SNAP_EVERY)) = 0 ]; then
    echo "s snap$i $i" >> $EV
    $T snapshot vol0 snap$i --pool /mnt/p/pool >/dev/null 2>>/host/manage.err \
      && echo "S snap$i $i" >> $EV && snaps="$snaps snap$i"
  fi
  if [ $((i % DELETE_EVERY)) = 0 ] && [ -n "$snaps" ]; then
    set -- $snaps; oldest=$1; shift; snaps="$*"
    echo "x $oldest" >> $EV
    $T delete $oldest --pool /mnt/p/pool >/dev/null 2>>/host/manage.err && echo "X $oldest" >> $EV
  fi
done
