//! fio's nbd engine: one job per run, one connection, JSON output. A `Job` is either
//! time-based (ramp, then `runtime` measured) or one pass over its region (first writes,
//! fills), capped in time. `run` returns the parsed figures and the exact command line.

use super::env;
use super::limits;
use super::results::IoSample;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Job {
    /// fio's rw=: randread, randwrite, read, write, or "write:60k" (sequential with holes).
    pub rw: String,
    pub bs_bytes: u64,
    pub iodepth: u32,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    /// Time-based (loops over the region for `runtime` after `ramp`), or one pass over
    /// the region that stops early at `runtime`.
    pub time_based: bool,
    pub ramp: Duration,
    pub runtime: Duration,
}

impl Job {
    /// A time-based run: `ramp` of warm-up, then `runtime` measured.
    pub fn timed(
        rw: &str,
        bs: u64,
        qd: u32,
        off: u64,
        size: u64,
        ramp: Duration,
        runtime: Duration,
    ) -> Job {
        Job {
            rw: rw.into(),
            bs_bytes: bs,
            iodepth: qd,
            offset_bytes: off,
            size_bytes: size,
            time_based: true,
            ramp,
            runtime,
        }
    }

    /// One pass over the region (every block once), stopped after `cap` if not done.
    pub fn pass(rw: &str, bs: u64, qd: u32, off: u64, size: u64, cap: Duration) -> Job {
        Job {
            rw: rw.into(),
            bs_bytes: bs,
            iodepth: qd,
            offset_bytes: off,
            size_bytes: size,
            time_based: false,
            ramp: Duration::ZERO,
            runtime: cap,
        }
    }

    fn is_read(&self) -> bool {
        self.rw.contains("read")
    }

    pub fn args(&self, uri: &str) -> Vec<String> {
        let mut a = vec![
            "--name=bench".to_string(),
            "--ioengine=nbd".to_string(),
            format!("--uri={uri}"),
            format!("--rw={}", self.rw),
            format!("--bs={}", self.bs_bytes),
            format!("--iodepth={}", self.iodepth),
            format!("--offset={}", self.offset_bytes),
            format!("--size={}", self.size_bytes),
            "--lat_percentiles=1".to_string(),
            "--output-format=json".to_string(),
            format!("--runtime={}ms", self.runtime.as_millis().max(1)),
        ];
        if self.time_based {
            a.push("--time_based".into());
        }
        if !self.ramp.is_zero() {
            a.push(format!("--ramp_time={}ms", self.ramp.as_millis()));
        }
        a
    }

    fn time_limit(&self) -> Duration {
        self.ramp + self.runtime + limits::FIO_SLACK
    }
}

/// Runs `job` against `uri`, with HOME set to `home` if given; returns its figures and
/// the command line. HOME matters to TLS: libnbd takes a TLS client's certificates from
/// `$HOME/.pki/libnbd` (fio's nbd engine does not let a URI name a local file).
pub fn run_with_home(
    fio: &Path,
    job: &Job,
    uri: &str,
    home: Option<&Path>,
) -> Result<(IoSample, String)> {
    let args = job.args(uri);
    let mut shown = command_line(fio, &args);
    let mut cmd = Command::new(fio);
    cmd.args(&args);
    if let Some(h) = home {
        cmd.env("HOME", h);
        shown = format!("HOME={} {shown}", h.display());
    }
    let out = env::run_bounded(&mut cmd, job.time_limit())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}\n{}",
            out.status,
            env::tail(&stdout),
            env::tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let sample =
        parse(&stdout, job.is_read()).with_context(|| format!("parsing the output of {shown}"))?;
    Ok((sample, shown))
}

/// The figures of fio's JSON output. fio may print notes before the JSON ("fio: …"), so
/// parsing starts at the first '{'.
pub fn parse(stdout: &str, read: bool) -> Result<IoSample> {
    let start = stdout.find('{').context("fio printed no JSON")?;
    let v: Value = serde_json::from_str(&stdout[start..]).context("fio's JSON does not parse")?;
    let job = v["jobs"].get(0).context("fio's JSON has no jobs")?;
    if let Some(e) = job["error"].as_i64().filter(|e| *e != 0) {
        bail!("fio reported error {e}");
    }
    let dir = &job[if read { "read" } else { "write" }];
    let num =
        |v: &Value, what: &str| v.as_f64().with_context(|| format!("fio's JSON has no {what}"));
    let total_ios = num(&dir["total_ios"], "total_ios")?;
    if total_ios <= 0.0 {
        bail!("fio did no I/O");
    }
    let pct = if dir["lat_ns"]["percentile"].is_object() {
        &dir["lat_ns"]["percentile"]
    } else {
        &dir["clat_ns"]["percentile"]
    };
    Ok(IoSample {
        iops: num(&dir["iops"], "iops")?,
        mib_s: num(&dir["bw_bytes"], "bw_bytes")? / (1u64 << 20) as f64,
        lat_p50_us: num(&pct["50.000000"], "a p50 latency")? / 1000.0,
        lat_p99_us: num(&pct["99.000000"], "a p99 latency")? / 1000.0,
        write_bytes: job["write"]["io_bytes"].as_u64().unwrap_or(0),
    })
}

/// A command line as a shell would take it back.
pub fn command_line(prog: &Path, args: &[String]) -> String {
    let mut s = prog.display().to_string();
    for a in args {
        s.push(' ');
        if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,+".contains(c)) {
            s.push_str(a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json_after_a_note_parses_into_figures() {
        let out = r#"fio: Any use of blockalign= turns off randommap
{"jobs":[{"error":0,"read":{"total_ios":10,"iops":1000.5,"bw_bytes":4194304,
"lat_ns":{"percentile":{"50.000000":2000,"99.000000":9000}}},"write":{"io_bytes":0}}]}"#;
        let s = parse(out, true).expect("parses");
        assert_eq!(s.iops, 1000.5);
        assert_eq!(s.mib_s, 4.0);
        assert_eq!(s.lat_p50_us, 2.0);
        assert_eq!(s.lat_p99_us, 9.0);
    }

    #[test]
    fn fio_output_without_io_or_json_is_an_error() {
        assert!(parse("fio: nothing", true).is_err());
        assert!(parse(r#"{"jobs":[{"error":0,"read":{"total_ios":0}}]}"#, true).is_err());
    }
}
