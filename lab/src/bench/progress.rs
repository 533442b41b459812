//! The progress line on stderr: an indicatif spinner when stderr is a terminal, else one
//! plain line per step (so CI logs show where a run is).

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
            pb
        });
        Progress { bar, started: Instant::now() }
    }

    /// The step now running.
    pub fn step(&self, msg: &str) {
        let t = self.started.elapsed().as_secs();
        let line = format!("[{:>3}:{:02}] {msg}", t / 60, t % 60);
        match &self.bar {
            Some(pb) => pb.set_message(line),
            None => eprintln!("thinly bench {line}"),
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
