//! The XML reader: turns either dialect (0.9's, and 1.x's with `<def>`/`<ref>`) into
//! [`MetadataVisitor`] events as it reads, so memory does not grow with the input.
//! Every error carries the line of the offending tag.

use std::io::Read;

use super::lexer::{Lexer, Token};
use crate::fsck::error::{Error, Result};
use crate::fsck::ir::{Device, MetadataVisitor, Run, Superblock};

/// Elements that can be open; the grammar nests at most three deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Superblock,
    Device,
    Def,
    /// A mapping or ref written as `<x …></x>` instead of `<x …/>`.
    Leaf(&'static str),
}

impl Open {
    fn name(self) -> &'static str {
        match self {
            Open::Superblock => "superblock",
            Open::Device => "device",
            Open::Def => "def",
            Open::Leaf(name) => name,
        }
    }
}

/// Reads a thin_dump XML document from `input` and replays it into `visitor`, ending
/// with `eof`. Fails on the first malformed, misplaced or out-of-range construct.
pub fn read_xml<R: Read, V: MetadataVisitor>(input: R, visitor: &mut V) -> Result<()> {
    let mut lex = Lexer::new(input);
    let mut stack: Vec<Open> = Vec::with_capacity(3);
    let mut root_done = false;
    loop {
        match lex.next_token()? {
            Token::Start { empty } => {
                let line = lex.tag_line();
                let opened = start(&lex, stack.last().copied(), root_done, visitor)
                    .map_err(|e| at_line(line, e))?;
                if empty {
                    end(opened, visitor, &mut root_done).map_err(|e| at_line(line, e))?;
                } else {
                    stack.push(opened);
                }
            }
            Token::End => {
                let line = lex.tag_line();
                let Some(open) = stack.pop() else {
                    return Err(Error::Syntax {
                        line,
                        reason: format!("unmatched end tag </{}>", lex.name().escape_ascii()),
                    });
                };
                if lex.name() != open.name().as_bytes() {
                    return Err(Error::Syntax {
                        line,
                        reason: format!(
                            "end tag </{}> does not close <{}>",
                            lex.name().escape_ascii(),
                            open.name()
                        ),
                    });
                }
                end(open, visitor, &mut root_done).map_err(|e| at_line(line, e))?;
            }
            Token::Eof => {
                let line = lex.line();
                if let Some(open) = stack.last() {
                    let reason = format!("input ends before </{}>", open.name());
                    return Err(Error::Syntax { line, reason });
                }
                if !root_done {
                    let reason = "no <superblock> element".to_string();
                    return Err(Error::Syntax { line, reason });
                }
                return visitor.eof().map_err(|e| at_line(line, e));
            }
        }
    }
}

/// Attaches a line to errors that lack one (those from the visitor).
fn at_line(line: u64, e: Error) -> Error {
    match e.line() {
        Some(_) => e,
        None => Error::AtLine { line, source: Box::new(e) },
    }
}

fn start<R: Read, V: MetadataVisitor>(
    lex: &Lexer<R>,
    parent: Option<Open>,
    root_done: bool,
    visitor: &mut V,
) -> Result<Open> {
    let line = lex.tag_line();
    let misplaced =
        |element: &str, place| Err(Error::Misplaced { line, element: element.into(), place });
    let name = lex.name();
    match (name, parent) {
        (_, Some(Open::Leaf(leaf))) => {
            misplaced(&name.escape_ascii().to_string(), leaf_place(leaf))
        }
        (b"superblock", None) if !root_done => {
            visitor.superblock_b(&parse_superblock(lex)?)?;
            Ok(Open::Superblock)
        }
        (b"superblock", _) => misplaced("superblock", "except once, as the root element"),
        (b"device", Some(Open::Superblock)) => {
            visitor.device_b(&parse_device(lex)?)?;
            Ok(Open::Device)
        }
        (b"def", Some(Open::Superblock)) => {
            visitor.def_shared_b(&parse_name(lex, "def")?)?;
            Ok(Open::Def)
        }
        (b"device" | b"def", _) => {
            misplaced(if name == b"def" { "def" } else { "device" }, "outside <superblock>")
        }
        (b"single_mapping", Some(Open::Device | Open::Def)) => {
            visitor.map(&parse_single(lex)?)?;
            Ok(Open::Leaf("single_mapping"))
        }
        (b"range_mapping", Some(Open::Device | Open::Def)) => {
            visitor.map(&parse_range(lex)?)?;
            Ok(Open::Leaf("range_mapping"))
        }
        (b"single_mapping" | b"range_mapping", _) => {
            misplaced(&name.escape_ascii().to_string(), "outside a <device> or <def>")
        }
        (b"ref", Some(Open::Device)) => {
            visitor.ref_shared(&parse_name(lex, "ref")?)?;
            Ok(Open::Leaf("ref"))
        }
        (b"ref", _) => misplaced("ref", "outside a <device>"),
        _ => Err(Error::UnknownElement { line, element: name.escape_ascii().to_string() }),
    }
}

fn leaf_place(leaf: &str) -> &'static str {
    match leaf {
        "ref" => "inside <ref>",
        "single_mapping" => "inside <single_mapping>",
        _ => "inside <range_mapping>",
    }
}

fn end<V: MetadataVisitor>(open: Open, visitor: &mut V, root_done: &mut bool) -> Result<()> {
    match open {
        Open::Superblock => {
            *root_done = true;
            visitor.superblock_e()
        }
        Open::Device => visitor.device_e(),
        Open::Def => visitor.def_shared_e(),
        Open::Leaf(_) => Ok(()),
    }
}

/// Looks up the attributes `names` of the current tag; unknown or repeated ones fail.
fn attributes<'a, R: Read, const N: usize>(
    lex: &'a Lexer<R>,
    element: &'static str,
    names: [&'static str; N],
) -> Result<[Option<&'a [u8]>; N]> {
    let line = lex.tag_line();
    let mut found = [None; N];
    for (key, value) in lex.attrs() {
        let Some(i) = names.iter().position(|n| n.as_bytes() == key) else {
            let attribute = key.escape_ascii().to_string();
            return Err(Error::UnknownAttribute { line, element, attribute });
        };
        if found[i].replace(value).is_some() {
            let attribute = names[i];
            return Err(Error::DuplicateAttribute { line, element, attribute });
        }
    }
    Ok(found)
}

fn required<'a>(
    line: u64,
    element: &'static str,
    attribute: &'static str,
    value: Option<&'a [u8]>,
) -> Result<&'a [u8]> {
    value.ok_or(Error::MissingAttribute { line, element, attribute })
}

/// A decimal number (digits only, as both dumpers print) that fits `T`.
fn number<T: TryFrom<u64>>(line: u64, attribute: &'static str, value: &[u8]) -> Result<T> {
    let bad = |reason| Error::BadValue {
        line,
        attribute,
        value: value.escape_ascii().to_string(),
        reason,
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad("not a decimal number"));
    }
    let n = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("out of range"))?;
    T::try_from(n).map_err(|_| bad("out of range"))
}

fn opt_number<T: TryFrom<u64>>(
    line: u64,
    attr: &'static str,
    v: Option<&[u8]>,
) -> Result<Option<T>> {
    v.map(|v| number(line, attr, v)).transpose()
}

fn text(line: u64, attribute: &'static str, value: &[u8]) -> Result<String> {
    String::from_utf8(value.to_vec()).map_err(|_| Error::BadValue {
        line,
        attribute,
        value: value.escape_ascii().to_string(),
        reason: "not UTF-8",
    })
}

fn parse_superblock<R: Read>(lex: &Lexer<R>) -> Result<Superblock> {
    const E: &str = "superblock";
    let line = lex.tag_line();
    let [uuid, time, transaction, flags, version, data_block_size, nr_data_blocks, metadata_snap] =
        attributes(
            lex,
            E,
            [
                "uuid",
                "time",
                "transaction",
                "flags",
                "version",
                "data_block_size",
                "nr_data_blocks",
                "metadata_snap",
            ],
        )?;
    Ok(Superblock {
        uuid: text(line, "uuid", required(line, E, "uuid", uuid)?)?,
        time: number(line, "time", required(line, E, "time", time)?)?,
        transaction: number(line, "transaction", required(line, E, "transaction", transaction)?)?,
        flags: opt_number(line, "flags", flags)?,
        version: opt_number(line, "version", version)?,
        data_block_size: number(
            line,
            "data_block_size",
            required(line, E, "data_block_size", data_block_size)?,
        )?,
        nr_data_blocks: number(
            line,
            "nr_data_blocks",
            required(line, E, "nr_data_blocks", nr_data_blocks)?,
        )?,
        metadata_snap: opt_number(line, "metadata_snap", metadata_snap)?,
    })
}

fn parse_device<R: Read>(lex: &Lexer<R>) -> Result<Device> {
    const E: &str = "device";
    let line = lex.tag_line();
    let [dev_id, mapped_blocks, transaction, creation_time, snap_time] = attributes(
        lex,
        E,
        ["dev_id", "mapped_blocks", "transaction", "creation_time", "snap_time"],
    )?;
    Ok(Device {
        dev_id: number(line, "dev_id", required(line, E, "dev_id", dev_id)?)?,
        mapped_blocks: number(
            line,
            "mapped_blocks",
            required(line, E, "mapped_blocks", mapped_blocks)?,
        )?,
        transaction: number(line, "transaction", required(line, E, "transaction", transaction)?)?,
        creation_time: number(
            line,
            "creation_time",
            required(line, E, "creation_time", creation_time)?,
        )?,
        snap_time: number(line, "snap_time", required(line, E, "snap_time", snap_time)?)?,
    })
}

fn parse_single<R: Read>(lex: &Lexer<R>) -> Result<Run> {
    const E: &str = "single_mapping";
    let line = lex.tag_line();
    let [origin, data, time] = attributes(lex, E, ["origin_block", "data_block", "time"])?;
    Ok(Run {
        origin_begin: number(line, "origin_block", required(line, E, "origin_block", origin)?)?,
        data_begin: number(line, "data_block", required(line, E, "data_block", data)?)?,
        len: 1,
        time: number(line, "time", required(line, E, "time", time)?)?,
    })
}

fn parse_range<R: Read>(lex: &Lexer<R>) -> Result<Run> {
    const E: &str = "range_mapping";
    let line = lex.tag_line();
    let [origin, data, length, time] =
        attributes(lex, E, ["origin_begin", "data_begin", "length", "time"])?;
    let length = required(line, E, "length", length)?;
    let len: u64 = number(line, "length", length)?;
    if len == 0 {
        return Err(Error::BadValue {
            line,
            attribute: "length",
            value: "0".into(),
            reason: "a range must map at least one block",
        });
    }
    Ok(Run {
        origin_begin: number(line, "origin_begin", required(line, E, "origin_begin", origin)?)?,
        data_begin: number(line, "data_begin", required(line, E, "data_begin", data)?)?,
        len,
        time: number(line, "time", required(line, E, "time", time)?)?,
    })
}

fn parse_name<R: Read>(lex: &Lexer<R>, element: &'static str) -> Result<String> {
    let line = lex.tag_line();
    let [name] = attributes(lex, element, ["name"])?;
    text(line, "name", required(line, element, "name", name)?)
}
