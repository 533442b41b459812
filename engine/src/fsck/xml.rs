//! thin_dump / thin_restore XML (spec §8.1): a streaming reader for both the 0.9 and
//! the 1.x dialect, and a writer that prints what Debian's `thin_dump` 0.9.0 prints.
//!
//! ```text
//! <superblock uuid time transaction [flags] [version] data_block_size nr_data_blocks [metadata_snap]>
//!   <def name>  mappings  </def>                      (1.x)
//!   <device dev_id mapped_blocks transaction creation_time snap_time>
//!     <single_mapping origin_block data_block time/>
//!     <range_mapping origin_begin data_begin length time/>
//!     <ref name/>                                     (1.x)
//!   </device>
//! </superblock>
//! ```

mod lexer;
mod read;
mod write;

pub use read::read_xml;
pub use write::{dump_writer, Dialect, DumpWriter, XmlWriter};

use super::error::Result;
use super::ir::Metadata;
use super::stream::MetadataBuilder;

/// Reads a whole document into memory (small pools and tests; use [`read_xml`] with a
/// visitor for large ones).
pub fn parse_xml<R: std::io::Read>(input: R) -> Result<Metadata> {
    let mut builder = MetadataBuilder::default();
    read_xml(input, &mut builder)?;
    builder.finish()
}

/// What `thin_dump` of `dialect` prints for `md` once restored: refs expanded (0.9),
/// runs coalesced, items in the IR's order (use [`Metadata::normalised`] to sort).
pub fn to_xml_string(md: &Metadata, dialect: Dialect) -> Result<String> {
    let mut w = dump_writer(Vec::new(), dialect);
    md.walk(&mut w)?;
    // The writer only ever emits ASCII digits, names and escaped UTF-8 strings.
    Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
}
