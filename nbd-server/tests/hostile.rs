//! Raw-socket tests: hostile and broken clients, error replies that keep the stream in
//! sync, structured reads with holes, timeouts, many connections, graceful shutdown.
//! Every socket read is bounded by `SOCKET_TIMEOUT`; no test asserts on timing.

mod common;

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use thinly_nbd::proto::consts::*;
use thinly_nbd::{
    Export, ExportTable, Extent, MemExport, Server, ServerConfig, ServerHandle, ZeroFlags,
};

#[test]
fn hostile_clients_close_only_their_own_connection_and_data_stays_intact() {
    let srv = TestServer::start("hostile");
    let mut good = Raw::open(&srv.socket, "mem", false);
    let a = pattern(65536, 11);
    good.write_ok(1, 0, &a);

    // Connect and vanish; vanish mid-greeting.
    drop(Raw::connect(&srv.socket));
    let mut c = Raw::connect(&srv.socket);
    c.recv(5).unwrap();
    drop(c);
    // Unknown client flags.
    let mut c = Raw::connect(&srv.socket);
    c.recv(18).unwrap();
    c.send(&0xffu32.to_be_bytes()).unwrap();
    assert!(c.closed_by_server());
    // Truncated option header, then close.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.send(&IHAVEOPT.to_be_bytes()[..5]).unwrap();
    drop(c);
    // Bad option magic.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.send(&[0x42u8; 16]).unwrap();
    assert!(c.closed_by_server());
    // Oversized option length.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    let mut h = IHAVEOPT.to_be_bytes().to_vec();
    h.extend_from_slice(&OPT_GO.to_be_bytes());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    c.send(&h).unwrap();
    assert!(c.closed_by_server());
    // EXPORT_NAME for an export that does not exist.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.option(OPT_EXPORT_NAME, b"no-such-export");
    assert!(c.closed_by_server());
    // Unknown options are answered and skipped; then GO works.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.option(0x7654321, &[9u8; 1000]);
    assert_eq!(c.option_reply().1, REP_ERR_UNSUP);
    c.option(OPT_PEEK_EXPORT, &[]);
    assert_eq!(c.option_reply().1, REP_ERR_UNSUP);
    c.go("mem");
    // Unknown command: EINVAL, and the stream stays usable.
    c.request(99, 0, 7, 0, 0, &[]);
    assert_eq!(c.simple_reply(), (22, 7));
    // Bad request magic: the stream is lost, the server hangs up.
    c.send(&[0xde; 28]).unwrap();
    assert!(c.closed_by_server());
    // WRITE longer than the payload limit: hard disconnect.
    let mut c = Raw::open(&srv.socket, "mem", false);
    c.request(CMD_WRITE, 0, 1, 0, u32::MAX, &[]);
    assert!(c.closed_by_server());
    // Disconnect in the middle of a WRITE payload: nothing is written.
    let mut c = Raw::open(&srv.socket, "mem", false);
    c.request(CMD_WRITE, 0, 1, 0, 65536, &[0xee; 1000]);
    drop(c);
    // Truncated request header, then close.
    let mut c = Raw::open(&srv.socket, "mem", false);
    c.send(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(c);
    // Garbage from the first byte.
    let mut c = Raw::connect(&srv.socket);
    let _ = c.send(&pattern(4096, 99));
    assert!(c.closed_by_server());

    // The well-behaved client is unaffected and the data is intact.
    assert_eq!(good.read_simple(2, 0, 65536), a);
    let b = pattern(4096, 12);
    good.write_ok(3, 1 << 20, &b);
    assert_eq!(good.read_simple(4, 1 << 20, 4096), b);
    // And a brand-new client still gets served.
    let mut fresh = Raw::open(&srv.socket, "mem", true);
    fresh.request(CMD_FLUSH, 0, 5, 0, 0, &[]);
    assert_eq!(fresh.simple_reply(), (0, 5));
}

#[test]
fn invalid_requests_get_error_replies_and_the_stream_stays_in_sync() {
    let srv = TestServer::start("errors");
    let mut c = Raw::open(&srv.socket, "mem", false);
    // Read past the end: EINVAL.
    c.request(CMD_READ, 0, 1, MEM_SIZE - 512, 1024, &[]);
    assert_eq!(c.simple_reply(), (22, 1));
    // Write past the end: ENOSPC, after the payload was consumed.
    c.request(CMD_WRITE, 0, 2, MEM_SIZE, 4096, &[1u8; 4096]);
    assert_eq!(c.simple_reply(), (28, 2));
    // Misaligned (the client asked for block sizes in GO): EINVAL.
    c.request(CMD_READ, 0, 3, 1, 512, &[]);
    assert_eq!(c.simple_reply(), (22, 3));
    c.request(CMD_WRITE, 0, 4, 0, 100, &[1u8; 100]);
    assert_eq!(c.simple_reply(), (22, 4));
    // Flags not valid for the command, and DF without structured replies.
    c.request(CMD_FLUSH, CMD_FLAG_NO_HOLE, 5, 0, 0, &[]);
    assert_eq!(c.simple_reply(), (22, 5));
    c.request(CMD_READ, CMD_FLAG_DF, 6, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (22, 6));
    // BLOCK_STATUS without a negotiated context.
    c.request(CMD_BLOCK_STATUS, 0, 7, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (22, 7));
    // Fast zero that cannot be fast (NO_HOLE): ENOTSUP.
    c.request(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, 8, 0, 4096, &[]);
    assert_eq!(c.simple_reply(), (95, 8));
    // Zero-length requests succeed without effect.
    c.request(CMD_WRITE, 0, 9, 0, 0, &[]);
    assert_eq!(c.simple_reply(), (0, 9));
    // Still in sync: pipelined writes, replies matched by cookie in any order.
    let data: Vec<Vec<u8>> = (0..8).map(|i| pattern(4096, i as u8)).collect();
    for (i, d) in data.iter().enumerate() {
        c.request(CMD_WRITE, CMD_FLAG_FUA, 100 + i as u64, i as u64 * 4096, 4096, d);
    }
    let mut cookies: Vec<u64> =
        (0..8).map(|_| c.simple_reply()).map(|(e, k)| (assert_eq!(e, 0), k).1).collect();
    cookies.sort();
    assert_eq!(cookies, (100..108).collect::<Vec<_>>());
    for (i, d) in data.iter().enumerate() {
        assert_eq!(&c.read_simple(200 + i as u64, i as u64 * 4096, 4096), d);
    }

    let mut r = Raw::open(&srv.socket, "ro", false);
    r.request(CMD_WRITE, 0, 1, 0, 512, &[0u8; 512]);
    assert_eq!(r.simple_reply(), (1, 1));
    r.request(CMD_TRIM, 0, 2, 0, 512, &[]);
    assert_eq!(r.simple_reply(), (1, 2));
    assert_eq!(r.read_simple(3, 0, 512), vec![0u8; 512]);
}

#[test]
fn structured_reads_send_holes_for_unallocated_ranges_and_df_sends_one_chunk() {
    let srv = TestServer::start("structured");
    let d = pattern(4096, 5);
    srv.mem.write(8192, &d, false).unwrap();
    let mut c = Raw::open(&srv.socket, "mem", true);
    c.request(CMD_READ, 0, 1, 0, 16384, &[]);
    let chunks: Vec<_> = (0..3).map(|_| c.chunk()).collect();
    assert_eq!(chunks[0].1, REPLY_TYPE_OFFSET_HOLE);
    assert_eq!(chunks[0].3, [0u64.to_be_bytes().as_slice(), &8192u32.to_be_bytes()].concat());
    assert_eq!(chunks[1].1, REPLY_TYPE_OFFSET_DATA);
    assert_eq!(&chunks[1].3[..8], &8192u64.to_be_bytes());
    assert_eq!(&chunks[1].3[8..], &d[..]);
    assert_eq!((chunks[2].0, chunks[2].1), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE));

    c.request(CMD_READ, CMD_FLAG_DF, 2, 0, 16384, &[]);
    let (flags, ty, cookie, payload) = c.chunk();
    assert_eq!(
        (flags, ty, cookie, payload.len()),
        (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 2, 8 + 16384)
    );
    assert_eq!(&payload[8 + 8192..8 + 12288], &d[..]);

    c.request(CMD_BLOCK_STATUS, 0, 3, 0, 16384, &[]);
    let (flags, ty, _, payload) = c.chunk();
    assert_eq!((flags, ty), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS));
    let words: Vec<u32> =
        payload.chunks(4).map(|w| u32::from_be_bytes(w.try_into().unwrap())).collect();
    assert_eq!(words, vec![1, 8192, 3, 4096, 0, 4096, 3]);
    // Errors in structured mode are error chunks.
    c.request(CMD_READ, 0, 4, MEM_SIZE, 512, &[]);
    let (flags, ty, cookie, payload) = c.chunk();
    assert_eq!((flags, ty, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 4));
    assert_eq!(&payload[..4], &22u32.to_be_bytes());
}

#[test]
fn silent_clients_hit_the_handshake_timeout_and_idle_ones_the_idle_timeout() {
    let config = ServerConfig {
        handshake_timeout: Some(Duration::from_millis(300)),
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with("timeouts", config);
    let mut c = Raw::connect(&srv.socket);
    c.recv(18).unwrap();
    assert!(c.closed_by_server());
    let mut c = Raw::open(&srv.socket, "mem", false);
    assert!(c.closed_by_server());
}

#[test]
fn many_clients_at_once_each_keep_their_own_data() {
    let srv = TestServer::start("many");
    let socket = srv.socket.clone();
    let threads: Vec<_> = (0..16u64)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Raw::open(&socket, "mem", i % 2 == 0);
                let d = pattern(65536, i as u8);
                for k in 0..4 {
                    c.write_ok(k, i * (1 << 20) + k * 65536, &d);
                }
                c.request(CMD_DISC, 0, 0, 0, 0, &[]);
                assert!(c.closed_by_server());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    for i in 0..16u64 {
        let mut buf = vec![0u8; 65536];
        srv.mem.read(i * (1 << 20) + 3 * 65536, &mut buf).unwrap();
        assert_eq!(buf, pattern(65536, i as u8));
    }
}

/// A MemExport whose writes wait until the test opens a gate, so requests are
/// provably in flight when shutdown starts.
struct GatedExport {
    inner: MemExport,
    state: Mutex<(usize, bool)>, // (writes entered, gate open)
    cv: Condvar,
}

impl Export for GatedExport {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn can_multi_conn(&self) -> bool {
        true
    }
    fn preferred_block_size(&self) -> u32 {
        4096
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.0 += 1;
        self.cv.notify_all();
        while !s.1 {
            s = self.cv.wait(s).unwrap();
        }
        drop(s);
        self.inner.write(offset, data, fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()> {
        self.inner.write_zeroes(offset, len, flags)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.inner.trim(offset, len, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.inner.block_status(offset, len)
    }
    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        self.inner.allocation_depth(offset, len)
    }
}

#[test]
fn graceful_shutdown_answers_in_flight_requests_before_closing() {
    let dir = TempDir::new("shutdown");
    let socket = dir.path("nbd.sock");
    let export = Arc::new(GatedExport {
        inner: MemExport::new(MEM_SIZE),
        state: Mutex::new((0, false)),
        cv: Condvar::new(),
    });
    let table = Arc::new(ExportTable::new());
    table.insert("gated", "", export.clone());
    let mut server = Server::new(table, ServerConfig::default());
    server.listen_unix(&socket).unwrap();
    let handle = server.start().unwrap();

    let mut c = Raw::open(&socket, "gated", false);
    let data = pattern(4096, 42);
    for i in 0..3u64 {
        c.request(CMD_WRITE, 0, i, i * 4096, 4096, &data);
    }
    // Wait until the workers hold all three writes.
    {
        let mut s = export.state.lock().unwrap();
        while s.0 < 3 {
            s = export.cv.wait(s).unwrap();
        }
    }
    let stopper = std::thread::spawn(move || handle.shutdown());
    // Let the shutdown begin, then release the writes.
    std::thread::sleep(Duration::from_millis(100));
    {
        let mut s = export.state.lock().unwrap();
        s.1 = true;
        export.cv.notify_all();
    }
    let mut cookies: Vec<u64> =
        (0..3).map(|_| c.simple_reply()).map(|(e, k)| (assert_eq!(e, 0), k).1).collect();
    cookies.sort();
    assert_eq!(cookies, vec![0, 1, 2]);
    assert!(c.closed_by_server());
    stopper.join().expect("shutdown thread");
    assert!(!socket.exists(), "the unix socket file is removed");
    let mut buf = vec![0u8; 4096];
    export.inner.read(8192, &mut buf).unwrap();
    assert_eq!(buf, data);
}

/// An extended-header request (32 bytes) and reply chunk reader.
fn ext_request(
    c: &mut Raw,
    command: u16,
    flags: u16,
    cookie: u64,
    offset: u64,
    length: u64,
    data: &[u8],
) {
    let mut v = 0x21e4_1c71u32.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&command.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&length.to_be_bytes());
    v.extend_from_slice(data);
    c.send(&v).unwrap();
}

/// (flags, type, cookie, offset, payload) of one extended chunk.
fn ext_chunk(c: &mut Raw) -> (u16, u16, u64, u64, Vec<u8>) {
    let h = c.recv(32).expect("extended chunk header");
    assert_eq!(&h[..4], &EXTENDED_REPLY_MAGIC.to_be_bytes());
    let flags = u16::from_be_bytes(h[4..6].try_into().unwrap());
    let ty = u16::from_be_bytes(h[6..8].try_into().unwrap());
    let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
    let offset = u64::from_be_bytes(h[16..24].try_into().unwrap());
    let len = u64::from_be_bytes(h[24..32].try_into().unwrap()) as usize;
    (flags, ty, cookie, offset, c.recv(len).unwrap())
}

#[test]
fn extended_headers_use_extended_chunks_for_every_reply() {
    let srv = TestServer::start("extended");
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.option(OPT_EXTENDED_HEADERS, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    let mut d = 3u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"mem");
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&15u32.to_be_bytes());
    d.extend_from_slice(b"base:allocation");
    c.option(OPT_SET_META_CONTEXT, &d);
    assert_eq!(c.option_replies().last().unwrap().1, REP_ACK);
    c.go("mem");

    let data = pattern(8192, 3);
    ext_request(&mut c, CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 1, 4096, 8192, &data);
    assert_eq!(ext_chunk(&mut c), (REPLY_FLAG_DONE, REPLY_TYPE_NONE, 1, 4096, vec![]));
    ext_request(&mut c, CMD_BLOCK_STATUS, 0, 2, 0, 1 << 20, &[]);
    let (flags, ty, cookie, offset, p) = ext_chunk(&mut c);
    assert_eq!((flags, ty, cookie, offset), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS_EXT, 2, 0));
    let w: Vec<u64> = p[8..].chunks(8).map(|b| u64::from_be_bytes(b.try_into().unwrap())).collect();
    assert_eq!(&p[..8], &[0, 0, 0, 1, 0, 0, 0, 3]);
    assert_eq!(w, vec![4096, 3, 8192, 0, (1 << 20) - 12288, 3]);
    ext_request(&mut c, CMD_READ, 0, 3, 4096, 8192, &[]);
    let (flags, ty, _, offset, p) = ext_chunk(&mut c);
    assert_eq!((flags, ty, offset), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 4096));
    assert_eq!(&p[8..], &data[..]);
    // A 64-bit effect length past the end is refused with an error chunk.
    ext_request(&mut c, CMD_TRIM, 0, 4, 0, 1 << 40, &[]);
    let (flags, ty, cookie, _, p) = ext_chunk(&mut c);
    assert_eq!((flags, ty, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 4));
    assert_eq!(&p[..4], &22u32.to_be_bytes());
    // A compact header in extended mode loses the stream (padded to the 32 bytes the
    // server reads before it looks at the magic).
    c.request(CMD_FLUSH, 0, 5, 0, 0, &[0u8; 4]);
    assert!(c.closed_by_server());
}

fn gated_server(
    tag: &str,
    config: ServerConfig,
) -> (TempDir, PathBuf, Arc<GatedExport>, ServerHandle) {
    let dir = TempDir::new(tag);
    let socket = dir.path("nbd.sock");
    let export = Arc::new(GatedExport {
        inner: MemExport::new(MEM_SIZE),
        state: Mutex::new((0, false)),
        cv: Condvar::new(),
    });
    let table = Arc::new(ExportTable::new());
    table.insert("gated", "", export.clone());
    let mut server = Server::new(table, config);
    server.listen_unix(&socket).unwrap();
    let handle = server.start().unwrap();
    (dir, socket, export, handle)
}

#[test]
fn requests_sent_while_draining_get_eshutdown_and_in_flight_ones_complete() {
    let (_dir, socket, export, handle) = gated_server("drain", ServerConfig::default());
    let mut c = Raw::open(&socket, "gated", false);
    let data = pattern(4096, 8);
    // Large enough to go to a worker, so the reader stays free to read what follows.
    c.request(CMD_WRITE, 0, 1, 0, 1 << 20, &pattern(1 << 20, 9));
    {
        let mut s = export.state.lock().unwrap();
        while s.0 < 1 {
            s = export.cv.wait(s).unwrap();
        }
    }
    handle.begin_shutdown();
    c.request(CMD_READ, 0, 2, 0, 4096, &[]);
    assert_eq!(c.simple_reply(), (108, 2), "a new request while draining: ESHUTDOWN");
    c.request(CMD_WRITE, 0, 3, 4 << 20, 4096, &data);
    assert_eq!(c.simple_reply(), (108, 3));
    let stopper = std::thread::spawn(move || handle.shutdown());
    {
        let mut s = export.state.lock().unwrap();
        s.1 = true;
        export.cv.notify_all();
    }
    assert_eq!(c.simple_reply(), (0, 1), "the in-flight write completes");
    assert!(c.closed_by_server());
    stopper.join().unwrap();
    let mut buf = vec![0u8; 4096];
    export.inner.read(4 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "the refused write did not happen");
    export.inner.read(8192, &mut buf).unwrap();
    assert!(buf == pattern(1 << 20, 9)[8192..12288], "the in-flight write landed");
}

#[test]
fn a_client_that_keeps_writing_and_never_reads_cannot_hold_shutdown_past_the_drain_limit() {
    let config = ServerConfig { drain_timeout: Duration::from_secs(1), ..ServerConfig::default() };
    let (_dir, socket, export, handle) = gated_server("drain-limit", config);
    {
        let mut s = export.state.lock().unwrap();
        s.1 = true; // writes pass at once
    }
    let mut c = Raw::open(&socket, "gated", false);
    let writer = std::thread::spawn(move || {
        let data = pattern(65536, 1);
        // Bounded: stops when the server closes (or after 1 GiB, which it never reaches).
        for i in 0..16384u64 {
            let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
            v.extend_from_slice(&0u16.to_be_bytes());
            v.extend_from_slice(&CMD_WRITE.to_be_bytes());
            v.extend_from_slice(&i.to_be_bytes());
            v.extend_from_slice(&((i % 512) * 65536).to_be_bytes());
            v.extend_from_slice(&65536u32.to_be_bytes());
            v.extend_from_slice(&data);
            if c.send(&v).is_err() {
                return true;
            }
        }
        false
    });
    // Let the client fill the pipes both ways.
    while handle.nr_connections() == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    handle.shutdown(); // returns: the drain limit closed the connection
    assert!(writer.join().unwrap(), "the server closed the endless writer");
}

#[test]
fn a_flood_of_tcp_connections_hits_its_own_cap_and_the_unix_socket_still_serves() {
    let config = ServerConfig { max_connections: 2, ..ServerConfig::default() };
    let srv = TestServer::start_with("per-listener-cap", config);
    let tcp = |_| {
        let s = std::net::TcpStream::connect(srv.tcp).unwrap();
        s.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        s
    };
    let mut held: Vec<std::net::TcpStream> = (0..2).map(tcp).collect();
    for s in &mut held {
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap(); // admitted: greeted
    }
    let mut refused = tcp(2);
    let mut buf = [0u8; 18];
    assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "third TCP connection closed");
    let mut c = Raw::open(&srv.socket, "mem", false);
    c.write_ok(1, 0, &[5u8; 512]);
    assert_eq!(c.read_simple(2, 0, 512), vec![5u8; 512]);
}

#[test]
fn the_server_wide_in_flight_budget_makes_other_clients_wait_instead_of_growing_memory() {
    let config = ServerConfig {
        max_server_in_flight_bytes: thinly_nbd::limits::MAX_IN_FLIGHT_BYTES,
        ..ServerConfig::default()
    };
    let (_dir, socket, export, handle) = gated_server("server-budget", config);
    let mut a = Raw::open(&socket, "gated", false);
    let big = vec![0x77u8; 32 << 20];
    a.request(CMD_WRITE, 0, 1, 0, 32 << 20, &big);
    a.request(CMD_WRITE, 0, 2, 32 << 20, 32 << 20, &big);
    {
        let mut s = export.state.lock().unwrap();
        while s.0 < 2 {
            s = export.cv.wait(s).unwrap();
        }
    }
    // The whole server budget is held by A's two writes: B's read must wait for it.
    let mut b = Raw::open(&socket, "gated", false);
    b.request(CMD_READ, 0, 3, 0, 4096, &[]);
    let waiting = std::thread::spawn(move || {
        let reply = b.simple_reply();
        (reply, b.recv(4096).unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "B was answered while the server budget was spent");
    {
        let mut s = export.state.lock().unwrap();
        s.1 = true;
        export.cv.notify_all();
    }
    let mut cookies = [a.simple_reply().1, a.simple_reply().1];
    cookies.sort();
    assert_eq!(cookies, [1, 2]);
    let (reply, data) = waiting.join().unwrap();
    assert_eq!(reply, (0, 3));
    assert!(data.iter().all(|&x| x == 0x77));
    handle.shutdown();
}
