//! `thinly serve --config FILE`: a TOML file with a key for every flag of `thinly serve`,
//! named as the long flag without its dashes (`listen = "0.0.0.0:10809"`,
//! `tls-certificates = "/etc/thinly/tls"`, `tls-verify-peer = true`; `_` may stand for
//! `-`). The command line overrides the file: the file's settings are turned into flags
//! placed before the command line's, and the later of two flags wins.
//!
//! Values: strings, integers and booleans (`true` gives the flag, `false` leaves it out);
//! an array repeats a flag. Anything else, an unknown key, or a `config` key is an error
//! naming the file. The one key that is no flag, `[[access]]` (the access policy), is
//! read by `policy`.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::serve::ServeArgs;

/// `serve`'s arguments alone, with later flags overriding earlier ones.
#[derive(Debug, Parser)]
#[command(name = "thinly serve", args_override_self = true)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

/// The flags a config file stands for, in file order.
pub fn config_flags(path: &Path) -> Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("parsing the config file {}", path.display()))?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        if key == crate::policy::ACCESS_KEY {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        if flag == "--config" {
            bail!("{}: a config file cannot name another (key `config`)", path.display());
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            match v {
                toml::Value::String(s) => flags.extend([flag.clone().into(), s.into()]),
                toml::Value::Integer(n) => {
                    flags.extend([flag.clone().into(), n.to_string().into()])
                }
                toml::Value::Boolean(true) => flags.push(flag.clone().into()),
                toml::Value::Boolean(false) => {}
                other => bail!(
                    "{}: key `{key}` has a {} value; use a string, an integer or a boolean",
                    path.display(),
                    other.type_str()
                ),
            }
        }
    }
    Ok(flags)
}

/// Re-reads `serve`'s arguments with `config`'s flags first and the command line's
/// (`cli`, the words after `serve`) after them.
pub fn merge(config: &Path, cli: &[OsString]) -> Result<ServeArgs> {
    let mut argv: Vec<OsString> = vec!["thinly serve".into()];
    argv.extend(config_flags(config)?);
    argv.extend(cli.iter().cloned());
    let parsed = ServeOnly::try_parse_from(argv)
        .map_err(|e| anyhow::anyhow!("{}", e.render()))
        .with_context(|| format!("applying the config file {}", config.display()))?;
    Ok(parsed.args)
}

/// The words after `serve` on this process's command line.
pub fn serve_words() -> Vec<OsString> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.iter().position(|a| a == "serve") {
        Some(i) => args[i + 1..].to_vec(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn config_keys_become_flags_and_the_command_line_overrides_them() {
        let f = file(
            "listen = \"0.0.0.0:10809\"\ntls = \"require\"\ntls_certificates = \"/etc/t\"\n\
             tls-verify-peer = true\nhandshake-timeout = 3\nbusy-poll-us = 0\n",
        );
        let a = merge(f.path(), &[]).unwrap();
        assert_eq!(a.listen, "0.0.0.0:10809");
        assert_eq!(a.handshake_timeout, 3);
        assert_eq!(a.busy_poll_us, 0);
        assert!(a.tls.tls_verify_peer);
        assert_eq!(a.tls.tls_certificates.as_deref(), Some(Path::new("/etc/t")));
        let cli: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:1".into()];
        let a = merge(f.path(), &cli).unwrap();
        assert_eq!(a.listen, "127.0.0.1:1", "the command line wins");
        assert_eq!(a.handshake_timeout, 3, "the file still counts for the rest");
    }

    #[test]
    fn unknown_keys_tables_and_nested_configs_are_errors_naming_the_file() {
        for text in
            ["no-such-flag = 1\n", "[tls]\nx = 1\n", "config = \"/x\"\n", "listen = [1.5]\n"]
        {
            let f = file(text);
            let e = format!("{:#}", merge(f.path(), &[]).unwrap_err());
            assert!(e.contains(&f.path().display().to_string()), "{text}: {e}");
        }
    }
}
