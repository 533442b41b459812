//! The progress display on stderr. On a terminal: an indicatif bar whose total is the
//! run's measurements (cases × engines × rounds, counted by the suites before they start),
//! with the step now running as its message. Not on a terminal: no bar at all, one plain
//! line per step (so CI logs show where a run is).

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A display for `total` measurements.
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} (eta {eta}) {wide_msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            pb.set_style(style);
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
            pb
        });
        Progress { bar, started: Instant::now() }
    }

    /// The step now running.
    pub fn step(&self, msg: &str) {
        match &self.bar {
            Some(pb) => pb.set_message(msg.to_string()),
            None => {
                let t = self.started.elapsed().as_secs();
                eprintln!("thinly bench [{:>3}:{:02}] {msg}", t / 60, t % 60);
            }
        }
    }

    /// One measurement done (a fio run, a timed operation, a report point).
    pub fn inc(&self) {
        if let Some(pb) = &self.bar {
            // A suite that fails early skips its remaining measurements; one that measures
            // more than it counted never runs the bar past its end.
            if pb.position() < pb.length().unwrap_or(0) {
                pb.inc(1);
            }
        }
    }

    /// A line that stays (a finished suite).
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(pb) => pb.println(format!("thinly bench: {msg}")),
            None => eprintln!("thinly bench: {msg}"),
        }
    }

    /// A loud line: a skipped peer, a failed run.
    pub fn warn(&self, msg: &str) {
        self.note(&format!("WARNING: {msg}"));
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
