//! `thin_dump -f human_readable` (0.9.0): one `begin superblock:` line with the
//! superblock's values comma-separated, a block of `key: value` lines per device followed
//! by a blank line, one indented line per run, and `end superblock`.
//!
//! ```text
//! begin superblock: "", 3, 7, 0, 2, 128, 20000
//! device: 2
//! mapped_blocks: 300
//! transaction: 3
//! creation time: 1
//! snap time: 2
//!     (0..4) -> (0..4), 0
//!     5 -> 500, 1
//!
//! end superblock
//! ```
//!
//! Like [`XmlWriter`](super::XmlWriter), [`HumanWriter`] prints events as given; the
//! format has no shared runs, so use [`human_dump_writer`] to expand and coalesce.

use std::io::Write;

use super::error::{Error, Result};
use super::ir::{Device, Metadata, MetadataVisitor, Run, Superblock};
use super::stream::{Coalesce, ExpandRefs};

/// Prints the human-readable format; see the module documentation.
#[derive(Debug)]
pub struct HumanWriter<W: Write> {
    out: W,
}

/// What `thin_dump -f human_readable` prints for a restored stream.
pub type HumanDumpWriter<W> = ExpandRefs<Coalesce<HumanWriter<W>>>;

/// A [`HumanWriter`] behind ref expansion and run coalescing.
pub fn human_dump_writer<W: Write>(out: W) -> HumanDumpWriter<W> {
    ExpandRefs::new(Coalesce::new(HumanWriter::new(out)))
}

/// The whole human-readable dump of `md` as a string.
pub fn to_human_string(md: &Metadata) -> Result<String> {
    let mut w = human_dump_writer(Vec::new());
    md.walk(&mut w)?;
    let bytes = w.into_inner().into_inner().into_inner();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl<W: Write> HumanWriter<W> {
    pub fn new(out: W) -> Self {
        HumanWriter { out }
    }

    /// The underlying output.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn put(&mut self, args: std::fmt::Arguments<'_>) -> Result<()> {
        self.out.write_fmt(args).map_err(Error::io("writing the human-readable dump"))
    }
}

fn no_sharing(event: &'static str) -> Result<()> {
    Err(Error::Sequence {
        event,
        reason: "the human-readable format cannot express shared runs (expand refs first)",
    })
}

impl<W: Write> MetadataVisitor for HumanWriter<W> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        self.put(format_args!(
            "begin superblock: \"{}\", {}, {}, {}, {}, {}, {}",
            sb.uuid,
            sb.time,
            sb.transaction,
            sb.flags.unwrap_or(0),
            sb.version.unwrap_or(1),
            sb.data_block_size,
            sb.nr_data_blocks
        ))?;
        if let Some(snap) = sb.metadata_snap {
            self.put(format_args!(", {snap}"))?;
        }
        self.put(format_args!("\n"))
    }

    fn superblock_e(&mut self) -> Result<()> {
        self.put(format_args!("end superblock\n"))
    }

    fn def_shared_b(&mut self, _name: &str) -> Result<()> {
        no_sharing("def")
    }

    fn def_shared_e(&mut self) -> Result<()> {
        no_sharing("def end")
    }

    fn device_b(&mut self, d: &Device) -> Result<()> {
        self.put(format_args!(
            "device: {}\nmapped_blocks: {}\ntransaction: {}\ncreation time: {}\nsnap time: {}\n",
            d.dev_id, d.mapped_blocks, d.transaction, d.creation_time, d.snap_time
        ))
    }

    fn device_e(&mut self) -> Result<()> {
        self.put(format_args!("\n"))
    }

    fn map(&mut self, run: &Run) -> Result<()> {
        if run.len == 1 {
            return self.put(format_args!(
                "    {} -> {}, {}\n",
                run.origin_begin, run.data_begin, run.time
            ));
        }
        let last = run.len - 1;
        self.put(format_args!(
            "    ({}..{}) -> ({}..{}), {}\n",
            run.origin_begin,
            run.origin_begin.saturating_add(last),
            run.data_begin,
            run.data_begin.saturating_add(last),
            run.time
        ))
    }

    fn ref_shared(&mut self, _name: &str) -> Result<()> {
        no_sharing("ref")
    }

    fn eof(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::io("flushing the human-readable dump"))
    }
}
