//! The access policy of `thinly serve`: `[[access]]` rules in the `--config` TOML file,
//! judged for the NBD server through `thinly_nbd::AccessPolicy`, reloaded on SIGHUP.
//!
//! ```toml
//! [[access]]                       # backup host: reads every volume over TLS
//! tls-dn = ["CN=backup,O=Example"]
//! access = "read"
//!
//! [[access]]                       # uid 1000 on the unix socket: writes vm-*
//! uid = [1000]
//! exports = ["vm-*"]
//! access = "write"
//! ```
//!
//! A rule has `access` ("none", "read" or "write"), `exports` (names; a trailing `*`
//! matches any rest; default every export) and conditions on the client, each a list
//! that matches if any of its entries does: `tls-dn` (a verified client certificate's
//! subject, as logged: `CN=…,O=…` in the certificate's order) and `psk-user` (together
//! one condition: the client's TLS identity is one of them), `uid` and `gid` (unix-socket
//! clients, by SO_PEERCRED), and `address` (TCP clients, `10.0.0.0/8` or a bare address).
//! A client matches a rule when it meets every condition the rule gives (no condition:
//! every client). The first rule matching both the client and the export decides; no
//! matching rule means `none`. Without any `[[access]]` rule there is no policy: every
//! client may list, open and write every served export, as before.
//!
//! Reload (SIGHUP): the file is read again; a bad file keeps the rules in force. Then
//! every connection in transmission is judged again and closed (gracefully: requests in
//! flight finish) if its access shrank; permitted connections are untouched.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use thinly_nbd::{Access, AccessPolicy, Client, Peer, TlsIdentity};

/// The config file's key for the rules (skipped by the flag parser in `config`).
pub const ACCESS_KEY: &str = "access";

/// One `[[access]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleText {
    access: Level,
    #[serde(default)]
    exports: Vec<String>,
    #[serde(default)]
    tls_dn: Vec<String>,
    #[serde(default)]
    psk_user: Vec<String>,
    #[serde(default)]
    uid: Vec<u32>,
    #[serde(default)]
    gid: Vec<u32>,
    #[serde(default)]
    address: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    None,
    Read,
    Write,
}

/// A parsed rule.
#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    /// Empty: every export.
    exports: Vec<String>,
    tls_dn: Vec<String>,
    psk_user: Vec<String>,
    uid: Vec<u32>,
    gid: Vec<u32>,
    address: Vec<IpNet>,
}

/// `CN=a, O=b` and `CN=a,O=b` are the same name.
fn normalize_dn(dn: &str) -> String {
    dn.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

fn parse_net(s: &str) -> Result<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    let ip: IpAddr = s.parse().with_context(|| format!("{s:?} is not an address or a CIDR"))?;
    Ok(IpNet::from(ip))
}

impl Rule {
    fn parse(t: RuleText) -> Result<Self> {
        let address = t.address.iter().map(|a| parse_net(a)).collect::<Result<_>>()?;
        if t.exports.iter().any(|e| e.is_empty() || e[..e.len() - 1].contains('*')) {
            bail!("an export pattern is empty or has a `*` before its end: {:?}", t.exports);
        }
        let exports = if t.exports.iter().any(|e| e == "*") { Vec::new() } else { t.exports };
        Ok(Self {
            access: match t.access {
                Level::None => Access::None,
                Level::Read => Access::Read,
                Level::Write => Access::Write,
            },
            exports,
            tls_dn: t.tls_dn.iter().map(|d| normalize_dn(d)).collect(),
            psk_user: t.psk_user,
            uid: t.uid,
            gid: t.gid,
            address,
        })
    }

    fn covers(&self, export: &str) -> bool {
        self.exports.is_empty()
            || self.exports.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => export.starts_with(prefix),
                None => p == export,
            })
    }

    fn matches(&self, client: &Client) -> bool {
        let identity_ok = (self.tls_dn.is_empty() && self.psk_user.is_empty())
            || match &client.tls {
                Some(TlsIdentity::Certificate(dn)) => self.tls_dn.contains(&normalize_dn(dn)),
                Some(TlsIdentity::PskUser(u)) => self.psk_user.contains(u),
                None => false,
            };
        let (uid, gid, ip) = match &client.peer {
            Peer::Unix { uid, gid } => (Some(*uid), Some(*gid), None),
            Peer::Tcp(a) => (None, None, Some(a.ip().to_canonical())),
            Peer::Unknown => (None, None, None),
        };
        let uid_ok = self.uid.is_empty() || uid.is_some_and(|u| self.uid.contains(&u));
        let gid_ok = self.gid.is_empty() || gid.is_some_and(|g| self.gid.contains(&g));
        let addr_ok = self.address.is_empty()
            || ip.is_some_and(|ip| self.address.iter().any(|n| n.contains(&ip)));
        identity_ok && uid_ok && gid_ok && addr_ok
    }
}

/// The rules of one config file, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The `[[access]]` rules of a parsed config file (`None`: the file has none).
    pub fn from_table(table: &toml::Table) -> Result<Option<Self>> {
        let Some(value) = table.get(ACCESS_KEY) else { return Ok(None) };
        let texts: Vec<RuleText> = value
            .clone()
            .try_into()
            .context("`access` must be an array of tables: [[access]] with access = \"read\" …")?;
        let rules = texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| Rule::parse(t).with_context(|| format!("[[access]] rule {}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Self(rules)))
    }

    /// The rules in the config file at `path`.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("parsing the config file {}", path.display()))?;
        Self::from_table(&table).with_context(|| format!("in the config file {}", path.display()))
    }

    fn access(&self, client: &Client, export: &str) -> Access {
        self.0
            .iter()
            .find(|r| r.covers(export) && r.matches(client))
            .map_or(Access::None, |r| r.access)
    }

    /// Whether some export may be opened by `client`: a granting rule matches it before
    /// any refusal of every export does.
    fn admits(&self, client: &Client) -> bool {
        for r in self.0.iter().filter(|r| r.matches(client)) {
            if r.access > Access::None {
                return true;
            }
            if r.exports.is_empty() {
                return false;
            }
        }
        false
    }
}

/// The policy the server holds: rules that a reload swaps whole.
#[derive(Debug)]
pub struct Policy {
    rules: RwLock<Arc<Rules>>,
}

impl Policy {
    pub fn new(rules: Rules) -> Self {
        Self { rules: RwLock::new(Arc::new(rules)) }
    }

    /// Puts `rules` in force for every decision from now on.
    pub fn replace(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }

    fn current(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl AccessPolicy for Policy {
    fn access(&self, client: &Client, export: &str) -> Access {
        self.current().access(client, export)
    }

    fn admits(&self, client: &Client) -> bool {
        self.current().admits(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Rules {
        Rules::from_table(&toml::from_str(text).unwrap()).unwrap().unwrap()
    }

    fn unix(uid: u32, gid: u32) -> Client {
        Client { peer: Peer::Unix { uid, gid }, tls: None }
    }

    fn tcp(addr: &str, tls: Option<TlsIdentity>) -> Client {
        Client { peer: Peer::Tcp(addr.parse().unwrap()), tls }
    }

    #[test]
    fn the_first_rule_matching_client_and_export_decides_and_no_match_is_none() {
        let r = rules(
            "[[access]]\nuid = [1000]\nexports = [\"secret\"]\naccess = \"none\"\n\
             [[access]]\nuid = [1000]\nexports = [\"vm-*\", \"vol0\"]\naccess = \"write\"\n\
             [[access]]\ngid = [50, 51]\naccess = \"read\"\n",
        );
        assert_eq!(r.access(&unix(1000, 1), "vm-a"), Access::Write);
        assert_eq!(r.access(&unix(1000, 1), "vol0"), Access::Write);
        assert_eq!(r.access(&unix(1000, 1), "vol1"), Access::None);
        assert_eq!(r.access(&unix(1000, 51), "secret"), Access::None, "an earlier rule said none");
        assert_eq!(r.access(&unix(1000, 51), "vol1"), Access::Read);
        assert_eq!(r.access(&tcp("127.0.0.1:1", None), "vol0"), Access::None);
        assert!(r.admits(&unix(7, 50)) && !r.admits(&unix(7, 7)));
    }

    #[test]
    fn identities_match_by_certificate_dn_or_psk_user_never_one_for_the_other() {
        let r = rules(
            "[[access]]\ntls-dn = [\"CN=backup, O=Example\"]\npsk-user = [\"alice\"]\n\
             access = \"read\"\n",
        );
        let dn = |s: &str| Some(TlsIdentity::Certificate(s.into()));
        let psk = |s: &str| Some(TlsIdentity::PskUser(s.into()));
        assert_eq!(r.access(&tcp("10.0.0.1:5", dn("CN=backup,O=Example")), "v"), Access::Read);
        assert_eq!(r.access(&tcp("10.0.0.1:5", psk("alice")), "v"), Access::Read);
        assert_eq!(r.access(&tcp("10.0.0.1:5", psk("CN=backup,O=Example")), "v"), Access::None);
        assert_eq!(r.access(&tcp("10.0.0.1:5", dn("CN=alice")), "v"), Access::None);
        assert_eq!(r.access(&tcp("10.0.0.1:5", None), "v"), Access::None);
    }

    #[test]
    fn addresses_match_tcp_clients_by_cidr_including_mapped_ipv4() {
        let r = rules(
            "[[access]]\naddress = [\"192.168.0.0/16\", \"::1\", \"10.1.2.3\"]\naccess = \"write\"\n",
        );
        for ok in ["192.168.7.9:1", "[::1]:1", "10.1.2.3:9", "[::ffff:192.168.1.1]:1"] {
            assert_eq!(r.access(&tcp(ok, None), "x"), Access::Write, "{ok}");
        }
        for no in ["192.169.0.1:1", "10.1.2.4:1", "[::2]:1"] {
            assert_eq!(r.access(&tcp(no, None), "x"), Access::None, "{no}");
        }
        assert_eq!(r.access(&unix(0, 0), "x"), Access::None, "unix clients have no address");
    }

    #[test]
    fn bad_rules_are_errors_and_a_file_without_rules_has_no_policy() {
        for text in [
            "[[access]]\naccess = \"all\"\n",
            "[[access]]\nexports = [\"v\"]\n",
            "[[access]]\naccess = \"read\"\nuser = [\"x\"]\n",
            "[[access]]\naccess = \"read\"\naddress = [\"10.0.0.0/33\"]\n",
            "[[access]]\naccess = \"read\"\nexports = [\"a*b\"]\n",
            "access = \"read\"\n",
        ] {
            let table: toml::Table = toml::from_str(text).unwrap();
            assert!(Rules::from_table(&table).is_err(), "{text}");
        }
        let table: toml::Table = toml::from_str("listen = \"none\"\n").unwrap();
        assert!(Rules::from_table(&table).unwrap().is_none());
    }

    #[test]
    fn the_readme_example_parses_and_means_what_it_says() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```toml\n")
            .filter_map(|b| b.split("```").next())
            .find(|b| b.contains("[[access]]"))
            .expect("the README shows an [[access]] example");
        let r = rules(block);
        let dn = Some(TlsIdentity::Certificate("O=Example,CN=backup".into()));
        assert_eq!(r.access(&tcp("192.0.2.1:9", dn), "vm-1"), Access::Read);
        assert_eq!(r.access(&tcp("10.20.3.4:9", None), "vm-1"), Access::Write);
        assert_eq!(r.access(&tcp("10.21.3.4:9", None), "vm-1"), Access::None);
        assert_eq!(r.access(&unix(5, 27), "vol0"), Access::Read);
        assert_eq!(r.access(&unix(5, 27), "vault"), Access::None);
    }

    #[test]
    fn a_replaced_rule_set_decides_from_then_on() {
        let p = Policy::new(rules("[[access]]\nuid = [1]\naccess = \"write\"\n"));
        assert_eq!(p.access(&unix(1, 1), "v"), Access::Write);
        p.replace(rules("[[access]]\nuid = [1]\naccess = \"read\"\n"));
        assert_eq!(p.access(&unix(1, 1), "v"), Access::Read);
    }
}
