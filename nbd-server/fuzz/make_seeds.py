"""Writes seed inputs for the nbd_session fuzz target: valid handshakes in each header
mode followed by a few requests, so the fuzzer starts past the greeting.
Layout of an input: 1 byte chunk size, then the client's byte stream."""
import struct, pathlib

IHAVEOPT = 0x49484156454F5054
out = pathlib.Path(__file__).parent / "seeds" / "nbd_session"
out.mkdir(parents=True, exist_ok=True)

def opt(n, data=b""):
    return struct.pack(">QII", IHAVEOPT, n, len(data)) + data

def meta(qs):
    d = struct.pack(">I", 0) + struct.pack(">I", len(qs))
    for q in qs:
        d += struct.pack(">I", len(q)) + q
    return d

def go(bs=True):
    return opt(7, struct.pack(">IH", 0, 1) + struct.pack(">H", 3) if bs else struct.pack(">IH", 0, 0))

def req(mode, cmd, flags, cookie, off, length, payload=b""):
    if mode == "ext":
        return struct.pack(">IHHQQQ", 0x21e41c71, flags, cmd, cookie, off, length) + payload
    return struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie, off, length) + payload

for mode in ["compact", "struct", "ext"]:
    s = struct.pack(">I", 3)
    if mode == "struct":
        s += opt(8)
    if mode == "ext":
        s += opt(11)
    if mode != "compact":
        s += opt(10, meta([b"base:allocation", b"qemu:allocation-depth"]))
    s += go()
    s += req(mode, 1, 0, 1, 4096, 512, b"\xab" * 512)
    s += req(mode, 0, 0, 2, 0, 8192)
    s += req(mode, 6, 0, 3, 0, 4096)
    s += req(mode, 7, 0, 4, 0, 65536)
    s += req(mode, 4, 0, 5, 8192, 4096)
    s += req(mode, 3, 0, 6, 0, 0)
    s += req(mode, 2, 0, 7, 0, 0)
    (out / f"{mode}").write_bytes(b"\x40" + s)
# Option haggling variety.
s = struct.pack(">I", 3) + opt(3) + opt(9, meta([])) + opt(6, struct.pack(">IH", 0, 2) + b"\x00\x01\x00\x02") + opt(5) + opt(0x7654321, b"xyz") + opt(1, b"")
(out / "options").write_bytes(b"\x07" + s)
(out / "abort").write_bytes(b"\x01" + struct.pack(">I", 1) + opt(2))
