//! Opening metadata inputs and outputs the way the thin_* tools do (with their checks and
//! messages), output streams, and the progress bars (stderr, terminals only).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::pool::size::format_size;
use thinly_engine::io::{Block, BlockDevice, FileDevice};

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

/// What a person sees on stderr while a long operation runs: a bar with its total; nothing
/// at all unless stderr is a terminal. Dropping it
/// clears it.
pub struct Progress(Option<indicatif::ProgressBar>);

/// How often a bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(120);

impl Progress {
    /// A bar of `total` items (`unit`: "blocks", or "bytes" for sizes in thinly's one
    /// size format).
    fn bar(message: &str, total: u64, unit: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let counts = if unit == "bytes" { "{done}/{total}" } else { "{pos}/{len} blocks" };
        let template = format!("{{msg}} [{{bar:40}}] {counts} ({{eta}} left)");
        let style = indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .with_key("done", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&format_size(s.pos()));
            })
            .with_key("total", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&s.len().map_or_else(|| "?".into(), format_size));
            })
            .progress_chars("=> ");
        let pb = indicatif::ProgressBar::new(total).with_style(style);
        pb.set_message(message.to_string());
        pb.enable_steady_tick(PROGRESS_TICK);
        Progress(Some(pb))
    }

    /// A bar over the metadata blocks in use (the superblock's count, else the device's
    /// size), advanced by each distinct block read through the returned device; on a
    /// terminal only (elsewhere `dev` comes back as it is).
    pub fn metadata(message: &str, dev: Arc<dyn BlockDevice>) -> (Self, Arc<dyn BlockDevice>) {
        let p = Progress::bar(message, blocks_in_use(&*dev), "blocks");
        match &p.0 {
            Some(pb) => {
                (Progress(Some(pb.clone())), Arc::new(CountingDevice::new(dev, pb.clone())))
            }
            None => (p, dev),
        }
    }

    /// No bar at all.
    pub fn hidden() -> Self {
        Progress(None)
    }

    /// A bar of `total_bytes` that the caller moves with [`Progress::set_bytes`] (pool create
    /// zeroing a data device).
    pub fn bytes(message: &str, total_bytes: u64) -> Self {
        Progress::bar(message, total_bytes, "bytes")
    }

    /// Moves a `bytes` bar to `done` of `total` bytes.
    pub fn set_bytes(&self, done: u64, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
            pb.set_position(done);
        }
    }

    /// A bar over the bytes of `input` (of `total_bytes`), read through the returned reader.
    pub fn reading<R: Read + 'static>(
        message: &str,
        input: R,
        total_bytes: u64,
    ) -> (Self, Box<dyn Read>) {
        let p = Progress::bar(message, total_bytes, "bytes");
        match &p.0 {
            Some(pb) => (Progress(Some(pb.clone())), Box::new(pb.wrap_read(input))),
            None => (p, Box::new(input)),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(pb) = self.0.take() {
            pb.finish_and_clear();
        }
    }
}

/// The metadata blocks in use, as the superblock's metadata space map counts them, bounded
/// by the device; the device's size when the superblock cannot be read (damaged metadata).
fn blocks_in_use(dev: &dyn BlockDevice) -> u64 {
    let mut block = [0u8; thinly_engine::limits::META_BLOCK_SIZE];
    let nr = dev.nr_blocks();
    if dev.read_block(0, &mut block).is_err() {
        return nr;
    }
    let sb = thinly_engine::format::superblock::Superblock::decode(&block);
    match sb.metadata_sm_root.nr_allocated {
        0 => nr,
        n => n.min(nr),
    }
}

/// Counts the distinct blocks read through it into a progress bar (a block the cache
/// dropped and reads again counts once); writes pass through.
struct CountingDevice {
    inner: Arc<dyn BlockDevice>,
    seen: Vec<AtomicU64>,
    bar: indicatif::ProgressBar,
}

impl CountingDevice {
    fn new(inner: Arc<dyn BlockDevice>, bar: indicatif::ProgressBar) -> Self {
        let words = inner.nr_blocks().div_ceil(64);
        let seen = (0..words).map(|_| AtomicU64::new(0)).collect();
        CountingDevice { inner, seen, bar }
    }

    fn count(&self, block: u64) {
        let Some(word) = usize::try_from(block / 64).ok().and_then(|w| self.seen.get(w)) else {
            return;
        };
        let bit = 1u64 << (block % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.bar.inc(1);
        }
    }
}

impl BlockDevice for CountingDevice {
    fn nr_blocks(&self) -> u64 {
        self.inner.nr_blocks()
    }

    fn read_block(&self, block: u64, buf: &mut Block) -> std::io::Result<()> {
        self.inner.read_block(block, buf)?;
        self.count(block);
        Ok(())
    }

    fn write_block(&self, block: u64, buf: &Block) -> std::io::Result<()> {
        self.inner.write_block(block, buf)
    }

    fn read_many(&self, blocks: &[u64], bufs: &mut [Block]) -> std::io::Result<()> {
        self.inner.read_many(blocks, bufs)?;
        blocks.iter().for_each(|b| self.count(*b));
        Ok(())
    }

    fn write_many(&self, writes: &[(u64, &Block)]) -> std::io::Result<()> {
        self.inner.write_many(writes)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn resize(&self, nr_blocks: u64) -> std::io::Result<()> {
        self.inner.resize(nr_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thinly_engine::io::MemDevice;

    #[test]
    fn the_counting_device_counts_each_block_once_and_passes_everything_through() {
        let mem: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(200));
        let bar = indicatif::ProgressBar::hidden();
        let dev = CountingDevice::new(mem.clone(), bar.clone());
        let mut buf = [7u8; thinly_engine::limits::META_BLOCK_SIZE];
        dev.write_block(130, &buf).expect("write");
        for b in [0, 130, 130, 199, 0] {
            dev.read_block(b, &mut buf).expect("read");
        }
        let mut bufs = vec![[0u8; thinly_engine::limits::META_BLOCK_SIZE]; 2];
        dev.read_many(&[130, 5], &mut bufs).expect("read_many");
        assert_eq!(bar.position(), 4, "blocks 0, 5, 130 and 199");
        assert_eq!(bufs[0][0], 7, "the write went through");
        assert!(dev.read_block(200, &mut buf).is_err(), "errors pass through uncounted");
        assert_eq!(bar.position(), 4);
    }

    #[test]
    fn blocks_in_use_falls_back_to_the_device_size_without_a_superblock() {
        let mem = MemDevice::new(50);
        assert_eq!(blocks_in_use(&mem), 50);
    }
}
