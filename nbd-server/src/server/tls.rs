//! TLS for STARTTLS (§4.4.3): X.509 certificates in the directory layout of qemu-nbd
//! and nbdkit (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`, optional
//! `ca-crl.pem`), optional client-certificate verification, and pre-shared keys in
//! the `username:hexkey` file format of psktool and nbdkit.
//!
//! Why OpenSSL (the `openssl` crate) and not rustls: NBD clients (libnbd, qemu) use
//! GnuTLS, and operators use its PSK mode; rustls has no TLS-PSK at all, OpenSSL has it
//! in TLS 1.2 and 1.3. OpenSSL also reads the CRL of the certificate directory as-is.
//!
//! Contract: `Tls::acceptor` hands out the current context; `Tls::reload` builds a new
//! one from the same settings and swaps it in only if it built, so a bad file on
//! SIGHUP keeps the old certificates. Connections already up keep the context they
//! started with: a reload never drops a connection.
//!
//! Identity: after the handshake, `identity` names the client by its verified
//! certificate's subject DN (`CN=…,O=…`) or by its PSK username; policy uses it.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslOptions, SslRef, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509NameRef;
use thiserror::Error;

use super::stream::{Stream, TlsStream};
use crate::access::TlsIdentity;
use crate::limits::MAX_PSK_KEYS;

/// Where the certificates and keys are, and what to ask of clients.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Directory with `ca-cert.pem`, `server-cert.pem`, `server-key.pem` and optionally
    /// `ca-crl.pem`.
    pub certificates_dir: Option<PathBuf>,
    /// Require and verify a client certificate signed by `ca-cert.pem`.
    pub verify_peer: bool,
    /// A `username:hexkey` file (one key a line) for TLS-PSK.
    pub psk_file: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Neither certificates nor a PSK file were given.
    #[error("TLS needs a certificate directory or a PSK file")]
    NothingConfigured,
    /// `verify_peer` needs the CA certificate of the certificate directory.
    #[error("--tls-verify-peer needs the CA certificate of a certificate directory")]
    VerifyWithoutCa,
    /// OpenSSL refused a file or a setting.
    #[error("TLS setup failed at {what}: {source}")]
    OpenSsl {
        /// The file or step.
        what: String,
        /// OpenSSL's error stack.
        source: openssl::error::ErrorStack,
    },
    /// The PSK file could not be read or has a bad line.
    #[error("PSK file {path}: {reason}")]
    Psk {
        /// The file.
        path: PathBuf,
        /// What is wrong (line number included).
        reason: String,
    },
}

fn ossl(what: impl Into<String>) -> impl FnOnce(openssl::error::ErrorStack) -> TlsError {
    let what = what.into();
    move |source| TlsError::OpenSsl { what, source }
}

/// The server's TLS context, reloadable.
pub struct Tls {
    settings: TlsSettings,
    acceptor: RwLock<Arc<SslAcceptor>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Tls {
    /// Builds the context from `settings`.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let acceptor = build(&settings)?;
        Ok(Self { settings, acceptor: RwLock::new(Arc::new(acceptor)) })
    }

    /// Rebuilds from the same files (new certificates, CRL, keys); on error the old
    /// context stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = build(&self.settings)?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(acceptor);
        Ok(())
    }

    /// The context new connections use now.
    pub(crate) fn acceptor(&self) -> Arc<SslAcceptor> {
        Arc::clone(&self.acceptor.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A fresh TLS session object for one connection.
    pub(crate) fn new_session(&self) -> io::Result<Ssl> {
        Ssl::new(self.acceptor().context()).map_err(io::Error::other)
    }
}

/// Runs the server side of the TLS handshake on `raw` right after STARTTLS was
/// acknowledged, within `deadline`. A failed handshake (wrong CA, expired or revoked
/// certificate, unknown PSK user, garbage) is an `InvalidData` error: hard disconnect.
pub(crate) fn accept(tls: &Tls, raw: Stream, deadline: Option<Instant>) -> io::Result<Stream> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if left.is_some_and(|l| l.is_zero()) {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"));
    }
    raw.set_read_timeout(left)?;
    raw.set_write_timeout(left)?;
    let mut s = SslStream::new(tls.new_session()?, raw).map_err(io::Error::other)?;
    if let Err(e) = s.accept() {
        let verify = s.ssl().verify_result();
        let why = format!("TLS handshake failed: {e} (peer verification: {verify})");
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    s.get_ref().set_read_timeout(None)?;
    s.get_ref().set_write_timeout(None)?;
    let identity = identity(s.ssl());
    Ok(Stream::Tls(TlsStream::new(s, identity)?))
}

/// Where the PSK callback leaves the username it accepted.
fn psk_user_index() -> Result<Index<Ssl, String>, TlsError> {
    static INDEX: OnceLock<Index<Ssl, String>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index().map_err(ossl("allocating ex_data"))?;
    Ok(*INDEX.get_or_init(|| i))
}

fn build(s: &TlsSettings) -> Result<SslAcceptor, TlsError> {
    if s.certificates_dir.is_none() && s.psk_file.is_none() {
        return Err(TlsError::NothingConfigured);
    }
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(ossl("creating the context"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(ossl("TLS 1.2 minimum"))?;
    // No renegotiation (a reader and a writer share the session); a peer closing
    // without close_notify is a plain end of stream, as for TCP.
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::IGNORE_UNEXPECTED_EOF);
    if let Some(dir) = &s.certificates_dir {
        load_certificates(&mut b, dir, s.verify_peer)?;
    } else if s.verify_peer {
        return Err(TlsError::VerifyWithoutCa);
    }
    if let Some(path) = &s.psk_file {
        let keys = read_psk_file(path)?;
        let index = psk_user_index()?;
        // TLS 1.2 needs PSK suites listed; TLS 1.3 uses its SHA-256 suites.
        b.set_cipher_list("ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
            .map_err(ossl("PSK cipher list"))?;
        b.set_psk_server_callback(move |ssl: &mut SslRef, identity, out: &mut [u8]| {
            let user = identity.and_then(|i| std::str::from_utf8(i).ok()).unwrap_or("");
            match keys.get(user) {
                Some(key) if key.len() <= out.len() => {
                    out[..key.len()].copy_from_slice(key);
                    ssl.set_ex_data(index, user.to_owned());
                    Ok(key.len())
                }
                // 0 bytes of key: the handshake fails (unknown user).
                _ => Ok(0),
            }
        });
    }
    Ok(b.build())
}

fn load_certificates(b: &mut SslAcceptorBuilder, dir: &Path, verify: bool) -> Result<(), TlsError> {
    let file = |name: &str| dir.join(name);
    let shown = |name: &str| file(name).display().to_string();
    b.set_certificate_chain_file(file("server-cert.pem"))
        .map_err(ossl(shown("server-cert.pem")))?;
    b.set_private_key_file(file("server-key.pem"), SslFiletype::PEM)
        .map_err(ossl(shown("server-key.pem")))?;
    b.check_private_key().map_err(ossl("server key does not match the certificate"))?;
    let ca = file("ca-cert.pem");
    if ca.exists() {
        b.set_ca_file(&ca).map_err(ossl(shown("ca-cert.pem")))?;
    } else if verify {
        return Err(TlsError::VerifyWithoutCa);
    }
    let crl = file("ca-crl.pem");
    if crl.exists() {
        let store = b.cert_store_mut();
        let lookup = store.add_lookup(X509Lookup::file()).map_err(ossl("CRL lookup"))?;
        lookup.load_crl_file(&crl, SslFiletype::PEM).map_err(ossl(shown("ca-crl.pem")))?;
        store.set_flags(X509VerifyFlags::CRL_CHECK).map_err(ossl("CRL check"))?;
    }
    if verify {
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(())
}

/// Reads `username:hexkey` lines (blank lines and `#` comments skipped).
pub fn read_psk_file(path: &Path) -> Result<HashMap<String, Vec<u8>>, TlsError> {
    let err = |reason: String| TlsError::Psk { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut keys = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| err(format!("line {}: {what}", i + 1));
        let (user, hex) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
        if user.is_empty() {
            return Err(bad("empty username"));
        }
        let key = decode_hex(hex).ok_or_else(|| bad("key is not an even number of hex digits"))?;
        if key.is_empty() || key.len() > openssl_sys_max_psk_len() {
            return Err(bad("key length out of range"));
        }
        if keys.len() == MAX_PSK_KEYS {
            return Err(bad("too many keys"));
        }
        keys.insert(user.to_owned(), key);
    }
    if keys.is_empty() {
        return Err(err("no keys".into()));
    }
    Ok(keys)
}

/// OpenSSL's PSK_MAX_PSK_LEN.
const fn openssl_sys_max_psk_len() -> usize {
    512
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

/// The client's identity once the handshake is done: the verified certificate's subject
/// DN, or the PSK username; `None` for an anonymous client.
pub(crate) fn identity(ssl: &SslRef) -> Option<TlsIdentity> {
    if let Some(user) = psk_user_index().ok().and_then(|i| ssl.ex_data(i)) {
        return Some(TlsIdentity::PskUser(user.clone()));
    }
    // Only asked for (and so only present) with --tls-verify-peer, and then verified.
    let cert = ssl.peer_certificate()?;
    Some(TlsIdentity::Certificate(format_dn(cert.subject_name())))
}

/// `CN=client,O=Example` style, in the certificate's order.
fn format_dn(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_files_parse_and_bad_lines_name_their_line() {
        let dir = std::env::temp_dir().join(format!("thinly-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("keys.psk");
        std::fs::write(&p, "# comment\nalice:00ff10\n\nbob:0102\n").unwrap();
        let keys = read_psk_file(&p).unwrap();
        assert_eq!(keys["alice"], vec![0, 0xff, 0x10]);
        assert_eq!(keys["bob"], vec![1, 2]);
        std::fs::write(&p, "alice:00ff10\nbob:0g\n").unwrap();
        let e = read_psk_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&p, "nocolon\n").unwrap();
        assert!(read_psk_file(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_without_certificates_or_keys_is_refused() {
        assert!(matches!(Tls::new(TlsSettings::default()), Err(TlsError::NothingConfigured)));
    }
}
