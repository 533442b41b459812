//! `thinly bench --config FILE`: a run's settings as TOML. Every run writes its effective
//! settings to `OUT/config.toml` (the suite and every field of `Config`); passing that file
//! back repeats the run. A file may also hold any subset of the keys: the rest come from
//! the defaults (full or `quick = true`), and options given on the command line win over
//! the file. An unknown key is an error, not a silent default.

use super::Config;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// A parsed config file: the keys that are not `Config` fields, and the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub suite: Option<String>,
    pub quick: bool,
    fields: toml::Table,
}

impl File {
    pub fn load(path: &Path) -> Result<File> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        File::parse(&text).with_context(|| format!("in the bench config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<File> {
        let mut fields: toml::Table = text.parse().context("not valid TOML")?;
        let suite = match fields.remove("suite") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(v) => bail!("suite must be a string, not {v}"),
        };
        let quick = match fields.get("quick") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(v) => bail!("quick must be true or false, not {v}"),
        };
        Ok(File { suite, quick, fields })
    }

    /// `base` with this file's fields laid over it.
    pub fn apply(&self, base: Config) -> Result<Config> {
        let mut table = toml::Table::try_from(&base).context("encoding the default settings")?;
        merge(&mut table, &self.fields, "")?;
        let cfg: Config =
            toml::Value::Table(table).try_into().context("the settings do not fit together")?;
        cfg.check()?;
        Ok(cfg)
    }
}

/// Lays `over` onto `base` key by key (nested tables merged); a key `base` lacks is an error.
fn merge(base: &mut toml::Table, over: &toml::Table, at: &str) -> Result<()> {
    for (k, v) in over {
        let name = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
        match (base.get_mut(k), v) {
            (None, _) => bail!(
                "unknown setting {name:?} (known: {})",
                base.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &name)?,
            (Some(slot), v) => *slot = v.clone(),
        }
    }
    Ok(())
}

/// Writes the effective settings of a run (its suite and `cfg`) as TOML.
pub fn write(path: &Path, suite: &str, cfg: &Config) -> Result<()> {
    let mut table = toml::Table::try_from(cfg).context("encoding the settings")?;
    table.insert("suite".into(), toml::Value::String(suite.into()));
    let text = format!(
        "# thinly bench settings; repeat the run with `thinly bench --config {}`\n{}",
        path.display(),
        toml::to_string(&table).context("encoding the settings")?
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_config_reads_back_to_the_same_settings() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("config.toml");
        let mut cfg = Config::defaults(true);
        cfg.seed = 7;
        cfg.depths = vec![1, 3];
        cfg.pool.zeroing = false;
        write(&path, "cow", &cfg).expect("writes");
        let file = File::load(&path).expect("reads");
        assert_eq!(file.suite.as_deref(), Some("cow"));
        assert!(file.quick);
        assert_eq!(file.apply(Config::defaults(true)).expect("applies"), cfg);
    }

    #[test]
    fn a_partial_config_keeps_the_defaults_for_the_rest() {
        let file = File::parse("repeat = 5\n[pool]\nblock_size_bytes = 262144\n").expect("parses");
        let cfg = file.apply(Config::defaults(false)).expect("applies");
        let mut want = Config::defaults(false);
        want.repeat = 5;
        want.pool.block_size_bytes = 256 << 10;
        assert_eq!(cfg, want);
        assert_eq!(file.suite, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let unknown = File::parse("repeats = 5").expect("parses");
        assert!(unknown.apply(Config::defaults(false)).is_err());
        let nested = File::parse("[pool]\nblock = 1").expect("parses");
        assert!(nested.apply(Config::defaults(false)).is_err());
        let wrong_type = File::parse("repeat = \"five\"").expect("parses");
        assert!(wrong_type.apply(Config::defaults(false)).is_err());
        let bad_block = File::parse("sweep_block_sizes = [65536, 1000]").expect("parses");
        assert!(bad_block.apply(Config::defaults(false)).is_err());
        assert!(File::parse("suite = 3").is_err());
    }
}
