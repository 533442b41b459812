//! Opening metadata inputs and outputs the way the thin_* tools do (with their checks and
//! messages), output streams, and the progress indicator (stderr, terminals only).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use thinly_engine::io::{BlockDevice, FileDevice};

/// Smallest metadata input: one block.
const MIN_INPUT_BYTES: u64 = 4096;
/// Smallest restore/repair output (thin-provisioning-tools' rule: 10 blocks).
const MIN_OUTPUT_BYTES: u64 = 40960;
/// Output buffer of the dumpers.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;

fn size_of(path: &Path, what: &str) -> Result<u64> {
    let md = std::fs::metadata(path)
        .with_context(|| format!("Couldn't find {what} '{}'", path.display()))?;
    let ft = md.file_type();
    if ft.is_file() {
        return Ok(md.len());
    }
    if ft.is_block_device() {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        return Ok(std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))?);
    }
    bail!("Not a block device or regular file '{}'", path.display())
}

/// Opens binary metadata for reading (or writing, for `--clear-needs-check-flag`).
pub fn open_input(path: &Path, writable: bool) -> Result<Arc<dyn BlockDevice>> {
    let len = size_of(path, "input file")?;
    if len < MIN_INPUT_BYTES {
        bail!("Metadata device/file too small.  Is this binary metadata?");
    }
    let mut head = [0u8; 16];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if f.read_exact(&mut head).is_ok() && looks_like_xml(&head) {
        bail!("This looks like XML.  This tool only reads the binary metadata format.");
    }
    let dev =
        FileDevice::open(path, !writable).with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(dev))
}

fn looks_like_xml(head: &[u8]) -> bool {
    let t = head.trim_ascii_start();
    t.starts_with(b"<superblock") || t.starts_with(b"<?xml") || t.starts_with(b"<!DOCTYPE")
}

/// Opens an existing, pre-sized output file or device for restore/repair.
pub fn open_output(path: &Path) -> Result<Arc<dyn BlockDevice>> {
    let len = size_of(path, "output file")?;
    if len < MIN_OUTPUT_BYTES {
        bail!("Output file too small.");
    }
    let dev = FileDevice::open(path, false)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    Ok(Arc::new(dev))
}

/// Opens a text input (XML) for reading.
pub fn open_text_input(path: &Path) -> Result<File> {
    size_of(path, "input file")?;
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// `-o FILE` or stdout, buffered.
pub fn output(path: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => {
            let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
            Box::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, f))
        }
        None => Box::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, std::io::stdout().lock())),
    })
}

/// A spinner on stderr while a long operation runs; nothing unless stderr is a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn start(message: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(message.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(pb))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(pb) = self.0.take() {
            pb.finish_and_clear();
        }
    }
}
