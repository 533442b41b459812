//! What a run measured, as written to results.json (and read back by the CSV, Markdown and
//! plot writers): rows of fio figures or timings, one per (suite, case, engine), each with
//! every round's sample and the exact commands; space usage per suite and engine; the
//! machine, tool versions and configuration.

use super::env::{Machine, Tools, Workspace};
use super::Config;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One fio run's figures (completion latency as fio's `lat_ns`: submit to completion).
/// Fields after `lat_p99_us` are absent from results written before they existed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IoSample {
    pub iops: f64,
    pub mib_s: f64,
    pub lat_p50_us: f64,
    #[serde(default)]
    pub lat_p90_us: Option<f64>,
    pub lat_p99_us: f64,
    #[serde(default)]
    pub lat_p999_us: Option<f64>,
    #[serde(default)]
    pub lat_max_us: Option<f64>,
    /// I/Os measured (after the ramp).
    #[serde(default)]
    pub total_ios: Option<u64>,
    pub write_bytes: u64,
    /// The server process's user + system CPU time over the measured part of the run
    /// (from /proc/PID/stat), per measured I/O.
    #[serde(default)]
    pub server_cpu_us_per_io: Option<f64>,
    /// fio's randseed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The run's job file and JSON output, relative to the output directory, without
    /// the extension (`raw/00012-basic-…`: `.fio` and `.json`).
    #[serde(default)]
    pub raw: Option<String>,
}

/// Median, min and max of the rounds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stats { median, min: v[0], max: v[n - 1] })
    }
}

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// fio figures: higher IOPS is better.
    Io,
    /// Milliseconds of a management operation: lower is better.
    TimeMs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub suite: String,
    pub case: String,
    pub engine: String,
    /// The engine is the transport ceiling (not a peer in ratios).
    pub ceiling: bool,
    /// The plotted line this row is a point of ("rand read 4K qd1"), and its x (depth, N).
    pub series: Option<String>,
    pub x: Option<f64>,
    pub kind: Kind,
    pub io: Vec<IoSample>,
    pub time_ms: Vec<f64>,
    /// Why this row has no (or fewer) numbers: a missing tool, a server that did not
    /// start, a failed run.
    pub error: Option<String>,
    /// Exact commands of the first round (fio, qemu-img …).
    pub commands: Vec<String>,
    /// Write cases: whether the flush is inside the timed run (`fio::Flush::label`).
    #[serde(default)]
    pub flush: Option<String>,
    /// What a timing measures (a spawned command, a request to a running server …).
    #[serde(default)]
    pub measures: Option<String>,
}

impl Row {
    /// The headline figure: median IOPS, or median milliseconds.
    pub fn headline(&self) -> Option<Stats> {
        match self.kind {
            Kind::Io => Stats::of(&self.io.iter().map(|s| s.iops).collect::<Vec<_>>()),
            Kind::TimeMs => Stats::of(&self.time_ms),
        }
    }

    pub fn stat(&self, f: impl Fn(&IoSample) -> f64) -> Option<Stats> {
        Stats::of(&self.io.iter().map(f).collect::<Vec<_>>())
    }

    /// Like `stat`, over the rounds that have the figure.
    pub fn stat_opt(&self, f: impl Fn(&IoSample) -> Option<f64>) -> Option<Stats> {
        Stats::of(&self.io.iter().filter_map(f).collect::<Vec<_>>())
    }

    /// Every round's headline figure (IOPS or milliseconds).
    pub fn values(&self) -> Vec<f64> {
        match self.kind {
            Kind::Io => self.io.iter().map(|s| s.iops).collect(),
            Kind::TimeMs => self.time_ms.clone(),
        }
    }
}

/// Space used after a suite, per engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceRow {
    pub suite: String,
    pub engine: String,
    /// Bytes the clients wrote (fio's write io_bytes, fills included).
    pub written_bytes: u64,
    /// Data bytes allocated: thinly's used_data_blocks × block size; a file's st_blocks.
    pub data_bytes: u64,
    /// Metadata bytes: thinly's used_metadata_blocks × 4 KiB; none for files (qcow2's
    /// metadata is inside data_bytes).
    pub metadata_bytes: Option<u64>,
    pub note: String,
}

/// Every (x, y) of one engine's series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curve {
    pub suite: String,
    pub name: String,
    pub engine: String,
    pub points: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub started_unix: u64,
    /// `git describe --always --dirty` of the thinly tree the binary was built from.
    #[serde(default)]
    pub git_commit: String,
    pub total_secs: f64,
    pub command: Vec<String>,
    pub machine: Machine,
    pub tools: Vec<(String, String)>,
    pub config: Config,
    /// Server command lines (one per engine, as first started).
    pub servers: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub space: Vec<SpaceRow>,
    /// Every point of a long series (snapshot N = 1 … max), for the plots.
    pub curves: Vec<Curve>,
    /// /proc/loadavg at the start and after each suite: the machine may be shared.
    pub load: Vec<(String, String)>,
    /// Engines that could not run, and why.
    pub skipped: Vec<(String, String)>,
}

impl Results {
    pub fn new(cfg: &Config, tools: &Tools, ws: &Workspace) -> Result<Results> {
        Ok(Results {
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            total_secs: 0.0,
            git_commit: super::env::git_commit(),
            command: std::env::args().collect(),
            machine: Machine::probe(&ws.data),
            tools: tools.versions(),
            config: cfg.clone(),
            servers: Vec::new(),
            rows: Vec::new(),
            space: Vec::new(),
            curves: Vec::new(),
            load: Vec::new(),
            skipped: Vec::new(),
        })
    }

    /// Reads a results.json, or the results.json inside a directory.
    pub fn load(path: &std::path::Path) -> Result<Results> {
        use anyhow::Context;
        let file = if path.is_dir() { path.join("results.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a thinly bench results.json", file.display()))
    }

    /// The row of (suite, case, engine), created if new.
    pub fn row(&mut self, suite: &str, case: &str, engine: &str, kind: Kind) -> &mut Row {
        let i = match self
            .rows
            .iter()
            .position(|r| r.suite == suite && r.case == case && r.engine == engine)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    suite: suite.into(),
                    case: case.into(),
                    engine: engine.into(),
                    ceiling: false,
                    series: None,
                    x: None,
                    kind,
                    io: Vec::new(),
                    time_ms: Vec::new(),
                    error: None,
                    commands: Vec::new(),
                    flush: None,
                    measures: None,
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    /// Records /proc/loadavg now, under `when`.
    pub fn note_load(&mut self, when: &str) {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        self.load.push((when.into(), l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")));
    }

    pub fn server_command(&mut self, engine: &str, command: &str) {
        if !self.servers.iter().any(|s| s.0 == engine) {
            self.servers.push((engine.into(), command.into()));
        }
    }
}

pub fn de_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    std::time::Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

pub fn ser_secs<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_the_median_and_the_extremes() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of(&[1.0, 4.0]).map(|s| s.median), Some(2.5));
        assert!(Stats::of(&[]).is_none());
    }
}
