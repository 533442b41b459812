//! The XML writer: prints events exactly as given, in the layout of Debian's
//! `thin_dump` 0.9.0 (two-space indentation, the tools' attribute order, one element per
//! line, a newline after `</superblock>`), or the 1.x variant of the superblock line.
//!
//! It does not reorder, merge or expand anything: put [`Coalesce`] and [`ExpandRefs`] in
//! front (as [`dump_writer`] does) to get what the dumper prints for a restored IR.

use std::io::Write;

use crate::fsck::error::{Error, Result};
use crate::fsck::ir::{Device, MetadataVisitor, Run, Superblock};
use crate::fsck::stream::{Coalesce, ExpandRefs};

/// Which thin_dump's output to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Dialect {
    /// Debian's thin-provisioning-tools 0.9.0: `flags` and `version` always printed
    /// (0 and 1 when the IR has none: what its restore stores), no `<def>`/`<ref>`.
    #[default]
    V09,
    /// thin-provisioning-tools 1.x: `flags` only when non-zero, `version` always (2 when
    /// the IR has none), `<def>`/`<ref>` allowed. Layout not checked against a 1.x binary.
    V1,
}

/// Writes XML for the events it receives; see the module documentation.
#[derive(Debug)]
pub struct XmlWriter<W: Write> {
    out: W,
    dialect: Dialect,
    depth: usize,
    line: Vec<u8>,
}

/// The stack that prints what `thin_dump` of `dialect` shows for a restored stream:
/// refs expanded (0.9 only) and runs coalesced.
pub fn dump_writer<W: Write>(out: W, dialect: Dialect) -> DumpWriter<W> {
    let expand = dialect == Dialect::V09;
    DumpWriter { inner: ExpandRefs::new(Coalesce::new(XmlWriter::new(out, dialect))), expand }
}

/// See [`dump_writer`].
#[derive(Debug)]
pub struct DumpWriter<W: Write> {
    inner: ExpandRefs<Coalesce<XmlWriter<W>>>,
    expand: bool,
}

impl<W: Write> DumpWriter<W> {
    /// The underlying output (flushed at `eof`).
    pub fn into_inner(self) -> W {
        self.inner.into_inner().into_inner().into_inner()
    }

    fn coalescer(&mut self) -> &mut Coalesce<XmlWriter<W>> {
        self.inner.inner_mut()
    }
}

impl<W: Write> MetadataVisitor for DumpWriter<W> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        self.inner.superblock_b(sb)
    }
    fn superblock_e(&mut self) -> Result<()> {
        self.inner.superblock_e()
    }
    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        match self.expand {
            true => self.inner.def_shared_b(name),
            false => self.coalescer().def_shared_b(name),
        }
    }
    fn def_shared_e(&mut self) -> Result<()> {
        match self.expand {
            true => self.inner.def_shared_e(),
            false => self.coalescer().def_shared_e(),
        }
    }
    fn device_b(&mut self, device: &Device) -> Result<()> {
        self.inner.device_b(device)
    }
    fn device_e(&mut self) -> Result<()> {
        self.inner.device_e()
    }
    fn map(&mut self, run: &Run) -> Result<()> {
        match self.expand {
            true => self.inner.map(run),
            false => self.coalescer().map(run),
        }
    }
    fn ref_shared(&mut self, name: &str) -> Result<()> {
        match self.expand {
            true => self.inner.ref_shared(name),
            false => self.coalescer().ref_shared(name),
        }
    }
    fn eof(&mut self) -> Result<()> {
        self.inner.eof()
    }
}

/// Appends `s` with the five XML special characters escaped (the tools print the uuid
/// raw; for the uuids they print, `""`, this is the same).
fn escape_into(line: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'&' => line.extend_from_slice(b"&amp;"),
            b'<' => line.extend_from_slice(b"&lt;"),
            b'>' => line.extend_from_slice(b"&gt;"),
            b'"' => line.extend_from_slice(b"&quot;"),
            b'\'' => line.extend_from_slice(b"&apos;"),
            _ => line.push(b),
        }
    }
}

impl<W: Write> XmlWriter<W> {
    /// A writer to `out`; give it a buffered writer for large dumps.
    pub fn new(out: W, dialect: Dialect) -> Self {
        XmlWriter { out, dialect, depth: 0, line: Vec::with_capacity(256) }
    }

    /// The underlying output.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn begin_line(&mut self) {
        self.line.clear();
        self.line.resize(2 * self.depth, b' ');
    }

    fn attr(&mut self, key: &str, value: impl std::fmt::Display) {
        // Writing to a Vec cannot fail.
        let _ = write!(self.line, " {key}=\"{value}\"");
    }

    fn end_line(&mut self) -> Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(Error::io("writing XML"))
    }

    fn close(&mut self, element: &str) -> Result<()> {
        self.depth = self.depth.saturating_sub(1);
        self.begin_line();
        let _ = write!(self.line, "</{element}>");
        self.end_line()
    }

    fn open_named(&mut self, element: &str, name: &str, empty: bool) -> Result<()> {
        self.begin_line();
        let _ = write!(self.line, "<{element} name=\"");
        escape_into(&mut self.line, name);
        self.line.extend_from_slice(if empty { b"\"/>" } else { b"\">" });
        if !empty {
            self.depth += 1;
        }
        self.end_line()
    }

    fn no_sharing(&self, event: &'static str) -> Result<()> {
        match self.dialect {
            Dialect::V09 => Err(Error::Sequence {
                event,
                reason: "the 0.9 dialect cannot express shared runs (expand refs first)",
            }),
            _ => Ok(()),
        }
    }
}

impl<W: Write> MetadataVisitor for XmlWriter<W> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        self.begin_line();
        self.line.extend_from_slice(b"<superblock uuid=\"");
        escape_into(&mut self.line, &sb.uuid);
        self.line.push(b'"');
        self.attr("time", sb.time);
        self.attr("transaction", sb.transaction);
        match self.dialect {
            Dialect::V09 => {
                self.attr("flags", sb.flags.unwrap_or(0));
                self.attr("version", sb.version.unwrap_or(1));
            }
            _ => {
                if let Some(flags) = sb.flags.filter(|&f| f != 0) {
                    self.attr("flags", flags);
                }
                self.attr("version", sb.version.unwrap_or(2));
            }
        }
        self.attr("data_block_size", sb.data_block_size);
        self.attr("nr_data_blocks", sb.nr_data_blocks);
        if let Some(snap) = sb.metadata_snap {
            self.attr("metadata_snap", snap);
        }
        self.line.push(b'>');
        self.depth += 1;
        self.end_line()
    }

    fn superblock_e(&mut self) -> Result<()> {
        self.close("superblock")
    }

    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        self.no_sharing("def")?;
        self.open_named("def", name, false)
    }

    fn def_shared_e(&mut self) -> Result<()> {
        self.close("def")
    }

    fn device_b(&mut self, d: &Device) -> Result<()> {
        self.begin_line();
        self.line.extend_from_slice(b"<device");
        self.attr("dev_id", d.dev_id);
        self.attr("mapped_blocks", d.mapped_blocks);
        self.attr("transaction", d.transaction);
        self.attr("creation_time", d.creation_time);
        self.attr("snap_time", d.snap_time);
        self.line.push(b'>');
        self.depth += 1;
        self.end_line()
    }

    fn device_e(&mut self) -> Result<()> {
        self.close("device")
    }

    fn map(&mut self, run: &Run) -> Result<()> {
        self.begin_line();
        if run.len == 1 {
            self.line.extend_from_slice(b"<single_mapping");
            self.attr("origin_block", run.origin_begin);
            self.attr("data_block", run.data_begin);
        } else {
            self.line.extend_from_slice(b"<range_mapping");
            self.attr("origin_begin", run.origin_begin);
            self.attr("data_begin", run.data_begin);
            self.attr("length", run.len);
        }
        self.attr("time", run.time);
        self.line.extend_from_slice(b"/>");
        self.end_line()
    }

    fn ref_shared(&mut self, name: &str) -> Result<()> {
        self.no_sharing("ref")?;
        self.open_named("ref", name, true)
    }

    fn eof(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::io("flushing XML"))
    }
}
