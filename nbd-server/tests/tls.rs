//! STARTTLS with real clients (libnbd's nbdinfo and nbdcopy, qemu-img and qemu-io)
//! and a raw client: X.509 with and without client certificates, pre-shared keys, a
//! wrong CA, expired certificates, garbage after STARTTLS, clients that skip TLS when
//! it is required, hostile requests inside TLS, and certificate reload.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::certs::Pki;
use common::*;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use thinly_nbd::proto::consts::*;
use thinly_nbd::proto::TlsMode;
use thinly_nbd::{ExportTable, MemExport, Server, ServerConfig, ServerHandle, Tls, TlsSettings};

/// A server with export `mem` on a Unix socket and loopback TCP, both in one TLS mode.
struct TlsServer {
    _dir: TempDir,
    socket: PathBuf,
    port: u16,
    mem: Arc<MemExport>,
    tls: Arc<Tls>,
    handle: Option<ServerHandle>,
}

impl TlsServer {
    fn start(tag: &str, settings: TlsSettings, mode: TlsMode) -> Self {
        let dir = TempDir::new(tag);
        let socket = dir.path("nbd.sock");
        let mem = Arc::new(MemExport::new(MEM_SIZE));
        let table = Arc::new(ExportTable::new());
        table.insert("mem", "writable memory", mem.clone());
        let tls = Arc::new(Tls::new(settings).expect("TLS settings"));
        let config = ServerConfig { tls: Some(tls.clone()), ..ServerConfig::default() };
        let mut server = Server::new(table, config);
        server.listen_unix_tls(&socket, mode).expect("listen unix");
        let port = server.listen_tcp_tls("127.0.0.1:0", mode).expect("listen tcp").port();
        let handle = Some(server.start().expect("start"));
        Self { _dir: dir, socket, port, mem, tls, handle }
    }

    fn x509(tag: &str, pki: &Pki, server_dir: &str, verify_peer: bool) -> Self {
        let settings = TlsSettings {
            certificates_dir: Some(pki.dir(server_dir)),
            verify_peer,
            psk_file: None,
        };
        Self::start(tag, settings, TlsMode::Require)
    }

    fn nbds(&self, client_dir: &Path) -> String {
        format!("nbds://127.0.0.1:{}/mem?tls-certificates={}", self.port, client_dir.display())
    }

    fn nbds_unix(&self, client_dir: &Path) -> String {
        format!(
            "nbds+unix:///mem?socket={}&tls-certificates={}",
            self.socket.display(),
            client_dir.display()
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

/// `nbdinfo --size URI`: the size, or None if the connection failed.
fn nbdinfo_size(nbdinfo: &Path, uri: &str) -> Option<u64> {
    let out = run(nbdinfo, &["--size", uri]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// A raw client on the Unix socket that upgrades with STARTTLS, trusting `ca` and
/// presenting `client` (cert, key) if given.
fn raw_tls(socket: &Path, ca: &Path, client: Option<&Path>) -> Raw {
    let mut c = Raw::connect(socket);
    c.greet();
    c.option(OPT_STARTTLS, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    let stream = std::mem::replace(&mut c.s, Box::new(std::io::Cursor::new(Vec::new())));
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca.join("ca-cert.pem")).unwrap();
    if let Some(dir) = client {
        b.set_certificate_file(dir.join("client-cert.pem"), SslFiletype::PEM).unwrap();
        b.set_private_key_file(dir.join("client-key.pem"), SslFiletype::PEM).unwrap();
    }
    b.set_verify(SslVerifyMode::PEER);
    let tls = b.build().connect("localhost", stream).ok().expect("TLS handshake");
    c.s = Box::new(tls);
    c
}

#[test]
fn nbdinfo_and_nbdcopy_work_over_nbds_on_tcp_and_unix_sockets() {
    let (Some(pki), Some(nbdinfo), Some(nbdcopy)) =
        (Pki::make("tls-libnbd"), tool("nbdinfo"), tool("nbdcopy"))
    else {
        return;
    };
    let srv = TlsServer::x509("tls-libnbd", &pki, "server", false);
    let ca = pki.dir("client-ca1");
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&ca)), Some(MEM_SIZE));
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds_unix(&ca)), Some(MEM_SIZE));
    let src = pki.tmp.path("src.img");
    let data = pattern(4 << 20, 7);
    std::fs::write(&src, &data).unwrap();
    run_ok(&nbdcopy, &[src.to_str().unwrap(), &srv.nbds(&ca)]);
    let back = pki.tmp.path("back.img");
    run_ok(&nbdcopy, &[&srv.nbds_unix(&ca), back.to_str().unwrap()]);
    assert_eq!(&std::fs::read(&back).unwrap()[..data.len()], &data[..]);
    let mut direct = vec![0u8; data.len()];
    thinly_nbd::Export::read(srv.mem.as_ref(), 0, &mut direct).unwrap();
    assert_eq!(direct, data);
}

#[test]
fn qemu_io_and_qemu_img_work_with_tls_creds_x509() {
    let (Some(pki), Some(qemu_io), Some(qemu_img)) =
        (Pki::make("tls-qemu"), tool("qemu-io"), tool("qemu-img"))
    else {
        return;
    };
    let srv = TlsServer::x509("tls-qemu", &pki, "server", false);
    let object =
        format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", pki.dir("client-ca1").display());
    let image = format!(
        "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=mem,tls-creds=tls0",
        srv.port
    );
    let args = |cmds: &[&str]| {
        let mut v = vec!["--object", &object, "--image-opts", &image];
        for c in cmds {
            v.extend_from_slice(&["-c", c]);
        }
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let a = args(&["write -P 0x5a 1M 256k", "read -P 0x5a 1M 256k", "read -P 0 0 64k"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run_ok(&qemu_io, &a);
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let info =
        run_ok(&qemu_img, &["info", "--output=json", "--object", &object, "--image-opts", &image]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["virtual-size"].as_u64(), Some(MEM_SIZE));
}

#[test]
fn mutual_authentication_admits_only_clients_with_a_certificate_of_our_ca() {
    let (Some(pki), Some(nbdinfo), Some(qemu_img)) =
        (Pki::make("tls-mutual"), tool("nbdinfo"), tool("qemu-img"))
    else {
        return;
    };
    let srv = TlsServer::x509("tls-mutual", &pki, "server", true);
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("alice"))), Some(MEM_SIZE));
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("client-ca1"))), None, "no certificate");
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("mallory"))), None, "another CA's");
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("alice-expired"))), None, "expired");
    let info = |dir: &str| {
        let object =
            format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", pki.dir(dir).display());
        let image = format!("driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=mem,tls-creds=tls0", srv.port);
        run(&qemu_img, &["info", "--object", &object, "--image-opts", &image]).status.success()
    };
    assert!(info("alice"));
    assert!(!info("client-ca1"));
}

#[test]
fn a_wrong_ca_or_an_expired_server_certificate_fails_the_client() {
    let (Some(pki), Some(nbdinfo)) = (Pki::make("tls-wrong"), tool("nbdinfo")) else {
        return;
    };
    let srv = TlsServer::x509("tls-wrong", &pki, "server", false);
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("client-ca2"))), None, "wrong CA");
    let expired = TlsServer::x509("tls-expired", &pki, "server-expired", false);
    assert_eq!(nbdinfo_size(&nbdinfo, &expired.nbds(&pki.dir("client-ca1"))), None, "expired");
    // The good server is unaffected by the failed attempts.
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("client-ca1"))), Some(MEM_SIZE));
}

#[test]
fn pre_shared_keys_work_with_nbdinfo_and_qemu_and_a_wrong_key_fails() {
    let (Some(pki), Some(nbdinfo), Some(qemu_img)) =
        (Pki::make("tls-psk"), tool("nbdinfo"), tool("qemu-img"))
    else {
        return;
    };
    let settings =
        TlsSettings { psk_file: Some(pki.tmp.path("keys.psk")), ..TlsSettings::default() };
    let srv = TlsServer::start("tls-psk", settings, TlsMode::Require);
    let uri = |file: &str| {
        let f = pki.tmp.path(file);
        format!("nbds://alice@127.0.0.1:{}/mem?tls-psk-file={}", srv.port, f.display())
    };
    assert_eq!(nbdinfo_size(&nbdinfo, &uri("keys.psk")), Some(MEM_SIZE));
    assert_eq!(nbdinfo_size(&nbdinfo, &uri("wrong.psk")), None);
    let unix = format!(
        "nbds+unix://alice@/mem?socket={}&tls-psk-file={}",
        srv.socket.display(),
        pki.tmp.path("keys.psk").display()
    );
    assert_eq!(nbdinfo_size(&nbdinfo, &unix), Some(MEM_SIZE));
    let object = format!(
        "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir={}",
        pki.dir("psk-dir").display()
    );
    let image = format!(
        "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=mem,tls-creds=tls0",
        srv.port
    );
    run_ok(&qemu_img, &["info", "--object", &object, "--image-opts", &image]);
}

#[test]
fn a_client_skipping_required_tls_gets_tls_reqd_and_cannot_reach_an_export() {
    let (Some(pki), Some(nbdinfo)) = (Pki::make("tls-skip"), tool("nbdinfo")) else {
        return;
    };
    let srv = TlsServer::x509("tls-skip", &pki, "server", false);
    let plain = format!("nbd://127.0.0.1:{}/mem", srv.port);
    assert_eq!(nbdinfo_size(&nbdinfo, &plain), None);
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.option(OPT_LIST, &[]);
    assert_eq!(c.option_reply().1, REP_ERR_TLS_REQD);
    let mut go = 3u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"mem\0\0");
    c.option(OPT_GO, &go);
    assert_eq!(c.option_reply().1, REP_ERR_TLS_REQD);
    c.option(OPT_EXPORT_NAME, b"mem");
    assert!(c.closed_by_server(), "EXPORT_NAME before TLS is a hard disconnect");
}

#[test]
fn garbage_after_starttls_closes_only_that_connection() {
    let Some(pki) = Pki::make("tls-garbage") else {
        return;
    };
    let srv = TlsServer::x509("tls-garbage", &pki, "server", false);
    // Garbage in place of a TLS hello.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    c.option(OPT_STARTTLS, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    let _ = c.send(&pattern(4096, 3));
    assert!(c.closed_by_server());
    // Bytes sent together with STARTTLS, before its reply.
    let mut c = Raw::connect(&srv.socket);
    c.greet();
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&OPT_STARTTLS.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]);
    c.send(&v).unwrap();
    assert_eq!(c.option_reply().1, REP_ACK);
    assert!(c.closed_by_server());
    // A proper client is still served.
    let mut good = raw_tls(&srv.socket, &pki.dir("client-ca1"), None);
    good.go("mem");
    good.write_ok(1, 0, &[9u8; 512]);
    assert_eq!(good.read_simple(2, 0, 512), vec![9u8; 512]);
}

#[test]
fn hostile_requests_inside_tls_get_errors_and_the_stream_stays_in_sync() {
    let Some(pki) = Pki::make("tls-hostile") else {
        return;
    };
    let srv = TlsServer::x509("tls-hostile", &pki, "server", false);
    let mut c = raw_tls(&srv.socket, &pki.dir("client-ca1"), None);
    c.option(OPT_STARTTLS, &[]);
    assert_eq!(c.option_reply().1, REP_ERR_INVALID, "a second STARTTLS");
    c.option(0x7654321, &[9u8; 1000]);
    assert_eq!(c.option_reply().1, REP_ERR_UNSUP);
    c.go("mem");
    c.request(99, 0, 7, 0, 0, &[]);
    assert_eq!(c.simple_reply(), (22, 7), "unknown command: EINVAL");
    c.request(CMD_READ, 0, 8, MEM_SIZE - 512, 1024, &[]);
    assert_eq!(c.simple_reply().1, 8);
    let big = pattern(1 << 20, 5);
    c.write_ok(9, 4096, &big);
    assert_eq!(c.read_simple(10, 4096, 1 << 20), big);
    c.send(&[0xde; 28]).unwrap();
    assert!(c.closed_by_server(), "bad magic: the server hangs up");
    let mut again = raw_tls(&srv.socket, &pki.dir("client-ca1"), None);
    again.go("mem");
    assert_eq!(again.read_simple(11, 4096, 4096), big[..4096]);
}

#[test]
fn reloaded_certificates_serve_new_clients_and_keep_old_connections() {
    let (Some(pki), Some(nbdinfo)) = (Pki::make("tls-reload"), tool("nbdinfo")) else {
        return;
    };
    let live_dir = pki.tmp.path("live");
    std::fs::create_dir_all(&live_dir).unwrap();
    let install = |from: &str| {
        for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
            std::fs::copy(pki.dir(from).join(f), live_dir.join(f)).unwrap();
        }
    };
    install("server");
    let settings =
        TlsSettings { certificates_dir: Some(live_dir.clone()), ..TlsSettings::default() };
    let srv = TlsServer::start("tls-reload", settings, TlsMode::Require);
    let mut old = raw_tls(&srv.socket, &pki.dir("client-ca1"), None);
    old.go("mem");
    old.write_ok(1, 0, &[4u8; 4096]);
    install("server2");
    srv.tls.reload().expect("reload");
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("client-ca2"))), Some(MEM_SIZE));
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("client-ca1"))), None);
    assert_eq!(old.read_simple(2, 0, 4096), vec![4u8; 4096], "the old connection lives on");
    // A broken file keeps the current certificates.
    std::fs::write(live_dir.join("server-key.pem"), "not a key").unwrap();
    assert!(srv.tls.reload().is_err());
    assert_eq!(nbdinfo_size(&nbdinfo, &srv.nbds(&pki.dir("client-ca2"))), Some(MEM_SIZE));
}
