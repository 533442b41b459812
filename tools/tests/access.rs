//! The access policy of `thinly serve` (`[[access]]` rules in `--config`) against real
//! clients: each kind of rule (unix uid and gid, TCP source address, certificate DN, PSK
//! username) deciding what `nbdinfo --list` shows, what `nbdinfo` can open and whether
//! `qemu-io` may write; and a SIGHUP reload that closes a connection whose access was
//! cut while a permitted one keeps working. Servers listen on a unix socket in a
//! temporary pool or on 127.0.0.1, stop by themselves, and every command is bounded.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: &[&str] = &["nbdinfo", "qemu-io", "openssl"];

use common::bounded;

fn ok(prog: &str, args: &[&str]) -> String {
    let out = bounded(prog, args, 60);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{prog} {args:?}: {}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn thinly(args: &[&str]) {
    ok(common::thinly().to_str().unwrap(), args);
}

/// A `thinly serve --config` process on a new pool in a temporary directory, with the
/// volumes vol0 (made by serve), data and secret.
struct Served {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Served {
    fn start(config_text: &str, extra: &[&str]) -> Served {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, config) = (tmp.path().join("pool"), tmp.path().join("thinly.toml"));
        std::fs::write(&config, config_text).unwrap();
        let (d, c) = (dir.to_str().unwrap(), config.to_str().unwrap());
        let mut args = vec!["serve", "--config", c, "--pool", d, "--create"];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "none"]);
        }
        args.extend_from_slice(extra);
        let child =
            Command::new(common::thinly()).args(&args).stderr(Stdio::piped()).spawn().unwrap();
        let s = Served { _tmp: tmp, dir: dir.clone(), config: config.clone(), child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.dir.join("control.sock").exists() {
            assert!(Instant::now() < deadline, "thinly serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        for v in ["data", "secret"] {
            thinly(&["create", v, "--size", "1M", "--pool", d]);
        }
        s
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("nbd.sock")
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket().display())
    }

    /// A plain client of the unix socket.
    fn via(&self) -> Via {
        let socket = self.socket();
        Via::plain(move |e| format!("nbd+unix:///{e}?socket={}", socket.display()))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// SIGTERM, exit 0, and the log.
    fn stop(&mut self) -> String {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "thinly serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{log}");
        log
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Export names `nbdinfo --list` shows at `uri` (None: the listing failed).
fn listed(uri: &str) -> Option<Vec<String>> {
    let out = bounded("nbdinfo", &["--list", "--json", uri], 60);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    Some(names)
}

/// Whether `nbdinfo` opens `uri`, and if so whether it is read-only.
fn opened(uri: &str) -> Option<bool> {
    let out = bounded("nbdinfo", &["--json", uri], 60);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v["exports"][0]["is_read_only"].as_bool().unwrap())
}

/// How a test client reaches one server: a libnbd URI for nbdinfo, and qemu-io's
/// arguments (a plain URI, or `--object tls-creds-…` and `--image-opts`) for an export.
struct Via {
    uri: Box<dyn Fn(&str) -> String>,
    qemu: QemuArgs,
}

/// qemu-io's arguments for an export.
type QemuArgs = Box<dyn Fn(&str) -> Vec<String>>;

impl Via {
    /// A plain (no TLS) client of `uri_of`.
    fn plain(uri_of: impl Fn(&str) -> String + Clone + 'static) -> Via {
        let u = uri_of.clone();
        Via {
            uri: Box::new(uri_of),
            qemu: Box::new(move |e| vec!["-f".into(), "raw".into(), u(e)]),
        }
    }

    /// A TLS client: `uri_of` for nbdinfo, qemu with the credentials `object` (id tls0)
    /// and `server` (the `server.*` image options).
    fn tls(uri_of: impl Fn(&str) -> String + 'static, object: String, server: String) -> Via {
        let qemu = move |e: &str| {
            let image = format!("driver=nbd,{server},export={e},tls-creds=tls0");
            ["--object", &object, "--image-opts", &image].map(String::from).to_vec()
        };
        Via { uri: Box::new(uri_of), qemu: Box::new(qemu) }
    }

    /// Whether `qemu-io` can write and flush 4 KiB at the start of `export`.
    fn writes(&self, export: &str) -> bool {
        let mut args = (self.qemu)(export);
        args.extend(["-c", "write -P 0x5a 0 4k", "-c", "flush"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bounded("qemu-io", &args, 60);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("wrote 4096/4096")
    }

    /// nbdinfo opens `export` (read-only as `expect` says) or, with `None`, cannot; and
    /// qemu-io can write it exactly when it opened read-write.
    fn check(&self, export: &str, expect: Option<bool>) {
        assert_eq!(opened(&(self.uri)(export)), expect, "open {export}: Some(read_only) or None");
        assert_eq!(self.writes(export), expect == Some(false), "write {export}");
    }

    fn list(&self) -> Option<Vec<String>> {
        listed(&(self.uri)(""))
    }
}

fn names(n: &[&str]) -> Option<Vec<String>> {
    Some(n.iter().map(|s| s.to_string()).collect())
}

#[test]
fn uid_and_gid_rules_decide_what_a_unix_client_lists_opens_and_writes() {
    if !common::have_tools(CLIENTS) {
        return;
    }
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let config = format!(
        "[[access]]\nuid = [{uid}]\nexports = [\"vol0\"]\naccess = \"write\"\n\
         [[access]]\ngid = [{gid}]\nexports = [\"dat*\"]\naccess = \"read\"\n\
         [[access]]\nuid = [{}]\naccess = \"write\"\n",
        uid + 1
    );
    let mut s = Served::start(&config, &[]);
    let via = s.via();
    assert_eq!(via.list(), names(&["data", "vol0"]));
    via.check("vol0", Some(false));
    via.check("data", Some(true));
    via.check("secret", None);
    // One connection, three refusals: a denied name answers as an absent one does.
    let replies = Held::info_replies(&s.socket(), &["secret", "nope", "secret"]);
    assert_eq!(replies, vec![ERR_UNKNOWN; 3]);
    let log = s.stop();
    let denials: Vec<&str> =
        log.lines().filter(|l| l.contains("access denied by policy")).collect();
    let what = "one line for each refused connection (nbdinfo, qemu-io, raw)";
    assert_eq!(denials.len(), 3, "{what}:\n{log}");
    assert!(denials[2].contains(&format!("uid={uid}")), "the line names the client: {log}");
}

#[test]
fn address_rules_decide_for_tcp_clients_and_a_client_matching_none_is_refused_outright() {
    if !common::have_tools(CLIENTS) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config =
        "[[access]]\naddress = [\"127.0.0.0/8\"]\nexports = [\"secret\"]\naccess = \"none\"\n\
         [[access]]\naddress = [\"127.0.0.1\"]\nexports = [\"data\"]\naccess = \"read\"\n\
         [[access]]\naddress = [\"10.0.0.0/8\", \"::1/128\"]\naccess = \"write\"\n\
         [[access]]\naddress = [\"127.0.0.0/8\"]\nexports = [\"vol0\"]\naccess = \"write\"\n";
    let listen = format!("127.0.0.1:{port}");
    let mut s = Served::start(config, &["--listen", &listen]);
    let tcp = Via::plain(move |e| format!("nbd://127.0.0.1:{port}/{e}"));
    assert_eq!(tcp.list(), names(&["data", "vol0"]));
    tcp.check("vol0", Some(false));
    tcp.check("data", Some(true));
    tcp.check("secret", None);
    // The unix socket's client has no address: no rule admits it, LIST is refused.
    assert_eq!(s.via().list(), None);
    assert_eq!(opened(&s.uri("vol0")), None);
    s.stop();
}

/// A CA, a server certificate for 127.0.0.1 and client directories for alice and bob
/// (`O=thinly tests,CN=NAME`), in the layouts nbdinfo and thinly read.
fn pki(root: &Path) {
    let ssl = |args: &[&str]| {
        ok("openssl", args);
    };
    let p = |n: &str| root.join(n).to_str().unwrap().to_owned();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_cert) = (p("ca-key.pem"), p("ca-cert.pem"));
    ca.extend(["-days", "30", "-subj", "/CN=access test CA", "-keyout", &ca_key, "-out", &ca_cert]);
    ssl(&ca);
    std::fs::write(root.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    std::fs::write(root.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, ext, dir, kind) in [
        ("server", "localhost", "server.ext", "server", "server"),
        ("alice", "alice", "client.ext", "alice", "client"),
        ("bob", "bob", "client.ext", "bob", "client"),
    ] {
        let (key, csr) = (p(&format!("{name}-key.pem")), p(&format!("{name}.csr")));
        let subj = format!("/O=thinly tests/CN={cn}");
        let mut req = vec!["req", "-new"];
        req.extend(ec);
        req.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
        ssl(&req);
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let cert = d.join(format!("{kind}-cert.pem")).to_str().unwrap().to_owned();
        let ext = p(ext);
        ssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        std::fs::copy(&key, d.join(format!("{kind}-key.pem"))).unwrap();
        std::fs::copy(&ca_cert, d.join("ca-cert.pem")).unwrap();
    }
}

#[test]
fn certificate_dn_rules_tell_verified_clients_apart() {
    if !common::have_tools(CLIENTS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "tls = \"require\"\ntls-certificates = {:?}\ntls-verify-peer = true\n\
         [[access]]\ntls-dn = [\"O=thinly tests, CN=alice\"]\naccess = \"write\"\n\
         [[access]]\ntls-dn = [\"O=thinly tests,CN=bob\"]\nexports = [\"data\"]\naccess = \"read\"\n",
        tmp.path().join("server").to_str().unwrap()
    );
    let listen = format!("127.0.0.1:{port}");
    let mut s = Served::start(&config, &["--listen", &listen]);
    let as_ = |who: &str| {
        let dir = tmp.path().join(who);
        let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", dir.display());
        let server = format!("server.type=inet,server.host=127.0.0.1,server.port={port}");
        let uri = move |e: &str| {
            format!("nbds://127.0.0.1:{port}/{e}?tls-certificates={}", dir.display())
        };
        Via::tls(uri, object, server)
    };
    let (alice, bob) = (as_("alice"), as_("bob"));
    assert_eq!(alice.list(), names(&["data", "secret", "vol0"]));
    alice.check("secret", Some(false));
    assert_eq!(bob.list(), names(&["data"]));
    bob.check("data", Some(true));
    bob.check("vol0", None);
    let log = s.stop();
    assert!(log.contains("CN=bob"), "the denial names the certificate: {log}");
}

#[test]
fn psk_user_rules_decide_by_the_key_the_client_used() {
    if !common::have_tools(CLIENTS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys.psk");
    std::fs::write(
        &keys,
        "alice:000102030405060708090a0b0c0d0e0f\nbob:0f0e0d0c0b0a09080706050403020100\n",
    )
    .unwrap();
    let config = format!(
        "tls = \"require\"\ntls-psk = {:?}\n\
         [[access]]\npsk-user = [\"alice\"]\nexports = [\"vol0\"]\naccess = \"write\"\n\
         [[access]]\npsk-user = [\"alice\", \"bob\"]\nexports = [\"data\"]\naccess = \"read\"\n",
        keys.to_str().unwrap()
    );
    let mut s = Served::start(&config, &[]);
    let as_ = |user: &'static str| {
        let (socket, keys) = (s.socket(), keys.clone());
        let object = format!(
            "tls-creds-psk,id=tls0,endpoint=client,username={user},dir={}",
            keys.parent().unwrap().display()
        );
        let server = format!("server.type=unix,server.path={}", socket.display());
        let uri = move |e: &str| {
            format!(
                "nbds+unix://{user}@/{e}?socket={}&tls-psk-file={}",
                socket.display(),
                keys.display()
            )
        };
        Via::tls(uri, object, server)
    };
    let (alice, bob) = (as_("alice"), as_("bob"));
    assert_eq!(alice.list(), names(&["data", "vol0"]));
    alice.check("vol0", Some(false));
    alice.check("data", Some(true));
    assert_eq!(bob.list(), names(&["data"]));
    bob.check("vol0", None);
    s.stop();
}

/// A minimal client holding one connection in transmission: fixed newstyle, GO on
/// `export`, then simple READs.
struct Held(UnixStream);

const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const ERR_UNKNOWN: u32 = 0x8000_0006;

impl Held {
    /// Connected, past the greeting, fixed newstyle agreed.
    fn connect(socket: &Path) -> UnixStream {
        let mut s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        s.write_all(&3u32.to_be_bytes()).unwrap();
        s
    }

    /// Sends INFO or GO for `export`; returns the final reply type (ACK or an error).
    fn option(s: &mut UnixStream, option: u32, export: &str) -> u32 {
        let mut o = 0x4948_4156_454F_5054u64.to_be_bytes().to_vec();
        o.extend(option.to_be_bytes());
        o.extend(((export.len() + 6) as u32).to_be_bytes());
        o.extend((export.len() as u32).to_be_bytes());
        o.extend(export.as_bytes());
        o.extend(0u16.to_be_bytes());
        s.write_all(&o).unwrap();
        loop {
            let mut hdr = [0u8; 20];
            s.read_exact(&mut hdr).unwrap();
            let ty = u32::from_be_bytes(hdr[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(hdr[16..20].try_into().unwrap()) as usize;
            let mut data = vec![0u8; len];
            s.read_exact(&mut data).unwrap();
            if ty == REP_ACK || ty & 0x8000_0000 != 0 {
                return ty;
            }
        }
    }

    /// One connection asking INFO about each export in turn: the final reply types.
    fn info_replies(socket: &Path, exports: &[&str]) -> Vec<u32> {
        let mut s = Held::connect(socket);
        exports.iter().map(|e| Held::option(&mut s, OPT_INFO, e)).collect()
    }

    fn open(socket: &Path, export: &str) -> Held {
        let mut s = Held::connect(socket);
        assert_eq!(Held::option(&mut s, OPT_GO, export), REP_ACK, "GO {export} refused");
        Held(s)
    }

    /// Reads 512 bytes at 0: whether the server answered without error.
    fn read_works(&mut self) -> bool {
        let mut req = 0x2560_9513u32.to_be_bytes().to_vec();
        req.extend([0u8; 4]); // flags, type READ
        req.extend(7u64.to_be_bytes());
        req.extend(0u64.to_be_bytes());
        req.extend(512u32.to_be_bytes());
        if self.0.write_all(&req).is_err() {
            return false;
        }
        let mut reply = [0u8; 16 + 512];
        self.0.read_exact(&mut reply).is_ok() && reply[4..8] == [0; 4]
    }
}

#[test]
fn sighup_reloads_the_policy_closing_only_connections_that_lost_access() {
    if !common::have_tools(CLIENTS) {
        return;
    }
    let uid = nix::unistd::geteuid().as_raw();
    let rules = |vol0: &str| {
        format!(
            "[[access]]\nuid = [{uid}]\nexports = [\"vol0\"]\naccess = \"{vol0}\"\n\
             [[access]]\nuid = [{uid}]\nexports = [\"data\"]\naccess = \"write\"\n"
        )
    };
    let mut s = Served::start(&rules("write"), &[]);
    let via = s.via();
    via.check("vol0", Some(false));
    let mut on_vol0 = Held::open(&s.socket(), "vol0");
    let mut on_data = Held::open(&s.socket(), "data");
    assert!(on_vol0.read_works() && on_data.read_works());

    // vol0 drops to read: its connection (opened for writing) is closed; data's is not.
    std::fs::write(&s.config, rules("read")).unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_vol0.read_works() {
        assert!(Instant::now() < deadline, "the revoked connection stayed open");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(on_data.read_works(), "a permitted connection was dropped");
    via.check("vol0", Some(true));

    // A broken file keeps the rules in force.
    std::fs::write(&s.config, "[[access]]\naccess = \"everything\"\n").unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(on_data.read_works());
    via.check("vol0", Some(true));

    // No rule left: nothing is allowed (a reload never turns the policy off).
    std::fs::write(&s.config, "").unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_data.read_works() {
        assert!(Instant::now() < deadline, "the revoked connection stayed open");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(via.list(), None);
    let log = s.stop();
    assert!(log.contains("reload failed, keeping the old"), "{log}");
    assert!(log.contains("1 connection(s) lost access"), "{log}");
}
