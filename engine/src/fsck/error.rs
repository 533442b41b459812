//! Errors of the tool formats: malformed or inconsistent XML, a broken IR, a bad
//! `thin_metadata_size` argument. Each variant names the line, element or attribute a
//! person has to look at.

use std::io;

/// Result of the `fsck` format layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, checking or writing a tool format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input or writing the output failed.
    #[error("I/O error {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    /// The input is not well-formed XML (or uses XML we do not accept, such as a DTD).
    #[error("line {line}: malformed XML: {reason}")]
    Syntax { line: u64, reason: String },
    /// An element the formats do not have.
    #[error("line {line}: unknown element <{element}>")]
    UnknownElement { line: u64, element: String },
    /// A known element in a place the format does not allow it (e.g. a mapping outside a
    /// device, a `<ref>` inside a `<def>`).
    #[error("line {line}: <{element}> is not allowed {place}")]
    Misplaced { line: u64, element: String, place: &'static str },
    /// A required attribute is absent.
    #[error("line {line}: <{element}> lacks the required attribute `{attribute}`")]
    MissingAttribute { line: u64, element: &'static str, attribute: &'static str },
    /// An attribute the element does not have.
    #[error("line {line}: <{element}> has no attribute `{attribute}`")]
    UnknownAttribute { line: u64, element: &'static str, attribute: String },
    /// The same attribute twice in one element (not well-formed XML).
    #[error("line {line}: <{element}> repeats the attribute `{attribute}`")]
    DuplicateAttribute { line: u64, element: &'static str, attribute: &'static str },
    /// An attribute value that does not parse or is out of range.
    #[error("line {line}: {attribute}=\"{value}\": {reason}")]
    BadValue { line: u64, attribute: &'static str, value: String, reason: &'static str },
    /// A named bound of this module (see the `MAX_*` constants in `fsck`) was exceeded.
    #[error("line {line}: {what} exceeds the limit of {limit}")]
    Limit { line: u64, what: &'static str, limit: u64 },
    /// A consumer rejected what a well-formed input said; `line` locates it.
    #[error("line {line}: {source}")]
    AtLine {
        line: u64,
        #[source]
        source: Box<Error>,
    },
    /// `<ref name>` names no earlier `<def>`.
    #[error("reference to undefined shared run \"{name}\"")]
    UndefinedRef { name: String },
    /// Two `<def>` with the same name.
    #[error("shared run \"{name}\" defined twice")]
    DuplicateDef { name: String },
    /// Events in an order the format forbids (e.g. a device before the superblock).
    #[error("unexpected {event}: {reason}")]
    Sequence { event: &'static str, reason: &'static str },
    /// The metadata is well-formed but not a valid pool (spec §4.5, §6.4, §7).
    #[error("device {dev_id:?}: {reason}")]
    Invalid { dev_id: Option<u32>, reason: String },
    /// Reading or writing binary metadata failed; the engine error names the block.
    #[error(transparent)]
    Metadata(#[from] crate::error::Error),
    /// A tool was asked for something the input cannot give (e.g. a device id that does
    /// not exist, a metadata snapshot that is not held).
    #[error("{0}")]
    Unusable(String),
    /// A `thin_metadata_size` argument was rejected; `message` is the tool's own wording.
    #[error("{message}")]
    Usage { message: &'static str },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    /// The line an error refers to, if it came from a parser.
    pub fn line(&self) -> Option<u64> {
        match self {
            Error::Syntax { line, .. }
            | Error::UnknownElement { line, .. }
            | Error::Misplaced { line, .. }
            | Error::MissingAttribute { line, .. }
            | Error::UnknownAttribute { line, .. }
            | Error::DuplicateAttribute { line, .. }
            | Error::BadValue { line, .. }
            | Error::Limit { line, .. }
            | Error::AtLine { line, .. } => Some(*line),
            _ => None,
        }
    }
}
