//! The TLS flags of `thinly serve` and how they become each listener's TLS mode.
//!
//! Defaults (issue 16): `require` on a TCP address that is not loopback, `off` on
//! loopback and on the unix socket; `--tls MODE` sets every listener. A listener that
//! needs TLS without certificates or keys is an error before anything is bound.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use thinly_nbd::proto::TlsMode;
use thinly_nbd::{Tls, TlsSettings};

/// `--tls`: as nbdkit's `--tls=off|on|require`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsArg {
    /// Refuse STARTTLS.
    Off,
    /// Offer TLS; clients may go without.
    On,
    /// Only STARTTLS and ABORT before TLS.
    Require,
}

impl From<TlsArg> for TlsMode {
    fn from(a: TlsArg) -> Self {
        match a {
            TlsArg::Off => TlsMode::Off,
            TlsArg::On => TlsMode::On,
            TlsArg::Require => TlsMode::Require,
        }
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// TLS on every listener [default: require on a TCP address that is not loopback,
    /// off on loopback and the unix socket].
    #[arg(long, value_enum, value_name = "off|on|require")]
    pub tls: Option<TlsArg>,
    /// X.509 directory: ca-cert.pem, server-cert.pem, server-key.pem, optional
    /// ca-crl.pem (the layout of qemu-nbd and nbdkit). Reloaded on SIGHUP.
    #[arg(long, value_name = "DIR")]
    pub tls_certificates: Option<PathBuf>,
    /// Require a client certificate signed by ca-cert.pem.
    #[arg(long)]
    pub tls_verify_peer: bool,
    /// Pre-shared keys, `username:hexkey` a line (psktool's format). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_psk: Option<PathBuf>,
}

/// Every listener's TLS mode and the context they share.
#[derive(Debug)]
pub struct TlsPlan {
    pub tcp: TlsMode,
    pub unix: TlsMode,
    pub tls: Option<Arc<Tls>>,
}

/// Whether every address `listen` names is a loopback address.
pub fn is_loopback(listen: &str) -> Result<bool> {
    let addrs: Vec<_> = listen
        .to_socket_addrs()
        .with_context(|| format!("resolving the listen address {listen}"))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

impl TlsArgs {
    /// Decides the modes for a TCP listener on `listen` (None: no TCP) and the unix
    /// socket, and loads the certificates or keys when any mode needs them.
    pub fn plan(&self, listen: Option<&str>) -> Result<TlsPlan> {
        let tcp = match (self.tls, listen) {
            (_, None) => TlsMode::Off,
            (Some(a), Some(_)) => a.into(),
            (None, Some(l)) if is_loopback(l)? => TlsMode::Off,
            (None, Some(_)) => TlsMode::Require,
        };
        let unix = self.tls.map(TlsMode::from).unwrap_or(TlsMode::Off);
        let configured = self.tls_certificates.is_some() || self.tls_psk.is_some();
        if tcp == TlsMode::Off && unix == TlsMode::Off {
            if configured {
                eprintln!("thinly: TLS is off on every listener (loopback and unix default to off; pass --tls on|require)");
            }
            return Ok(TlsPlan { tcp, unix, tls: None });
        }
        if !configured {
            bail!(
                "TLS is required on {} (not loopback): give --tls-certificates DIR or --tls-psk FILE, or --tls off",
                listen.unwrap_or("the unix socket")
            );
        }
        let settings = TlsSettings {
            certificates_dir: self.tls_certificates.clone(),
            verify_peer: self.tls_verify_peer,
            psk_file: self.tls_psk.clone(),
        };
        let tls = Tls::new(settings).context("loading the TLS certificates or keys")?;
        Ok(TlsPlan { tcp, unix, tls: Some(Arc::new(tls)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_off_loopback_and_off_on_loopback_by_default() {
        assert!(is_loopback("127.0.0.1:10809").unwrap());
        assert!(is_loopback("[::1]:10809").unwrap());
        assert!(!is_loopback("0.0.0.0:10809").unwrap());
        let none = TlsArgs::default();
        let p = none.plan(Some("127.0.0.1:0")).unwrap();
        assert_eq!((p.tcp, p.unix), (TlsMode::Off, TlsMode::Off));
        let e = none.plan(Some("0.0.0.0:0")).unwrap_err().to_string();
        assert!(e.contains("--tls-certificates"), "{e}");
        let off = TlsArgs { tls: Some(TlsArg::Off), ..TlsArgs::default() };
        let p = off.plan(Some("0.0.0.0:0")).unwrap();
        assert_eq!(p.tcp, TlsMode::Off);
        let on = TlsArgs { tls: Some(TlsArg::On), ..TlsArgs::default() };
        assert!(on.plan(None).is_err(), "the unix socket asked for TLS without keys");
    }
}
