//! Certificates for the TLS tests, made with the `openssl` command in a temporary
//! directory: two CAs, and certificate directories in the layouts qemu, nbdkit and
//! libnbd read (`ca-cert.pem`, `server-cert.pem`/`server-key.pem` for the server,
//! `client-cert.pem`/`client-key.pem` for clients).

use std::path::{Path, PathBuf};

use super::{run_ok, tool, TempDir};

/// Every directory the TLS tests use, under one temporary directory.
pub struct Pki {
    pub tmp: TempDir,
}

impl Pki {
    /// `None` (skip, or panic under CI) when `openssl` is missing.
    pub fn make(tag: &str) -> Option<Self> {
        let openssl = tool("openssl")?;
        let pki = Self { tmp: TempDir::new(tag) };
        let ssl = |args: &[&str]| {
            run_ok(&openssl, args);
        };
        let p = |name: &str| pki.tmp.path(name).display().to_string();
        for ca in ["ca1", "ca2"] {
            let subj = format!("/CN=thinly test {ca}");
            ssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
                .iter()
                .copied()
                .chain(["-nodes", "-days", "30", "-subj", &subj])
                .chain([
                    "-keyout",
                    &p(&format!("{ca}-key.pem")),
                    "-out",
                    &p(&format!("{ca}-cert.pem")),
                ])
                .collect::<Vec<_>>());
        }
        let server_ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n";
        std::fs::write(pki.tmp.path("server.ext"), server_ext).unwrap();
        std::fs::write(pki.tmp.path("client.ext"), client_ext).unwrap();
        let sign = |name: &str, cn: &str, ca: &str, ext: &str, days: &str| {
            let (key, csr, cert) = (
                p(&format!("{name}-key.pem")),
                p(&format!("{name}.csr")),
                p(&format!("{name}-cert.pem")),
            );
            let subj = format!("/O=thinly tests/CN={cn}");
            ssl(&[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &subj,
                "-keyout",
                &key,
                "-out",
                &csr,
            ]);
            let (ca_cert, ca_key) = (p(&format!("{ca}-cert.pem")), p(&format!("{ca}-key.pem")));
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
                days,
                "-extfile",
                &p(ext),
                "-out",
                &cert,
            ]);
        };
        sign("server", "localhost", "ca1", "server.ext", "30");
        sign("server2", "localhost", "ca2", "server.ext", "30");
        sign("server-expired", "localhost", "ca1", "server.ext", "-1");
        sign("alice", "alice", "ca1", "client.ext", "30");
        sign("mallory", "mallory", "ca2", "client.ext", "30");
        sign("alice-expired", "alice", "ca1", "client.ext", "-1");
        pki.server_dir("server", "server", "ca1");
        pki.server_dir("server2", "server2", "ca2");
        pki.server_dir("server-expired", "server-expired", "ca1");
        pki.client_dir("client-ca1", None, "ca1");
        pki.client_dir("client-ca2", None, "ca2");
        pki.client_dir("alice", Some("alice"), "ca1");
        pki.client_dir("mallory", Some("mallory"), "ca1");
        pki.client_dir("alice-expired", Some("alice-expired"), "ca1");
        std::fs::write(pki.tmp.path("keys.psk"), "alice:0123456789abcdef0123456789abcdef\n")
            .unwrap();
        std::fs::create_dir_all(pki.tmp.path("psk-dir")).unwrap();
        std::fs::copy(pki.tmp.path("keys.psk"), pki.tmp.path("psk-dir/keys.psk")).unwrap();
        std::fs::write(pki.tmp.path("wrong.psk"), "alice:00000000000000000000000000000000\n")
            .unwrap();
        Some(pki)
    }

    fn copy(&self, from: &str, to_dir: &Path, to: &str) {
        std::fs::copy(self.tmp.path(from), to_dir.join(to)).unwrap();
    }

    fn server_dir(&self, dir: &str, cert: &str, ca: &str) {
        let d = self.tmp.path(dir);
        std::fs::create_dir_all(&d).unwrap();
        self.copy(&format!("{ca}-cert.pem"), &d, "ca-cert.pem");
        self.copy(&format!("{cert}-cert.pem"), &d, "server-cert.pem");
        self.copy(&format!("{cert}-key.pem"), &d, "server-key.pem");
    }

    fn client_dir(&self, dir: &str, cert: Option<&str>, ca: &str) {
        let d = self.tmp.path(dir);
        std::fs::create_dir_all(&d).unwrap();
        self.copy(&format!("{ca}-cert.pem"), &d, "ca-cert.pem");
        if let Some(cert) = cert {
            self.copy(&format!("{cert}-cert.pem"), &d, "client-cert.pem");
            self.copy(&format!("{cert}-key.pem"), &d, "client-key.pem");
        }
    }

    /// A directory made by `make` (e.g. "server", "alice", "client-ca2").
    pub fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path(name)
    }
}
