#!/usr/bin/env python3
"""thin_dump-style XML of a large pool, for measuring `thinly list` (issue 15 §5).

NR_DEVICES thin devices of BLOCKS_PER_DEVICE mapped blocks each (2 M mappings for the
defaults). Every second device is a "snapshot" of the one before: it maps the same data
blocks as its origin for its first half and blocks of its own for the rest, so half of the
pair's blocks are shared (reference count 2) and half exclusive. The restored metadata keeps
no shared subtrees (thin_restore builds one tree per device), which is the worst case for
the exclusive-count walk: every leaf of every device is read once.

usage: usage_pool_xml.py [NR_DEVICES] [BLOCKS_PER_DEVICE] > pool.xml
prints the number of data blocks the pool needs on stderr.
"""
import sys

nr_devices = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
per_device = int(sys.argv[2]) if len(sys.argv) > 2 else 200
half = per_device // 2

out = sys.stdout
next_block = 0
devices = []
for i in range(nr_devices):
    if i % 2 == 1:
        shared_from = devices[-1][0]
        own = next_block
        next_block += per_device - half
        devices.append((shared_from, own))
    else:
        devices.append((next_block, None))
        next_block += per_device
nr_data_blocks = next_block
out.write(
    f'<superblock uuid="" time="1" transaction="1" flags="0" version="2" '
    f'data_block_size="128" nr_data_blocks="{nr_data_blocks}">\n'
)
for i, (first, own) in enumerate(devices):
    out.write(
        f'  <device dev_id="{i + 1}" mapped_blocks="{per_device}" transaction="0" '
        f'creation_time="0" snap_time="{1 if i % 2 == 0 else 0}">\n'
    )
    if own is None:
        out.write(f'    <range_mapping origin_begin="0" data_begin="{first}" length="{per_device}" time="0"/>\n')
    else:
        out.write(f'    <range_mapping origin_begin="0" data_begin="{first}" length="{half}" time="0"/>\n')
        out.write(
            f'    <range_mapping origin_begin="{half}" data_begin="{own}" '
            f'length="{per_device - half}" time="0"/>\n'
        )
    out.write("  </device>\n")
out.write("</superblock>\n")
print(nr_data_blocks, file=sys.stderr)
