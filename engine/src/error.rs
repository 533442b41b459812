//! The engine's error type. Each variant names what a person needs to act on it.

use crate::units::{DevId, MetaBlock};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the persistent-data and thin-metadata layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying device failed.
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A block's checksum does not match its contents for the expected block type.
    /// Worded as the real tools word it ("bad checksum in superblock, wanted N"): scripts
    /// grep for it.
    #[error("metadata block {block}: bad checksum in {kind}, wanted {computed} (stored {stored})")]
    Checksum { block: MetaBlock, kind: &'static str, stored: u32, computed: u32 },
    /// A block claims to live somewhere else (its self block number is wrong).
    #[error("metadata block {block}: {kind} says it is block {claimed}")]
    BlockNumber { block: MetaBlock, kind: &'static str, claimed: u64 },
    /// A block decoded but breaks a structural rule of the format.
    #[error("metadata block {block}: bad {kind}: {reason}")]
    Corrupt { block: MetaBlock, kind: &'static str, reason: String },
    /// A block number points past the end of the device.
    #[error(
        "metadata block {block} is beyond the end of the metadata device ({nr_blocks} blocks)"
    )]
    OutOfBounds { block: MetaBlock, nr_blocks: u64 },
    /// The superblock is not dm-thin metadata, or not one we may open.
    #[error("superblock: {0}")]
    BadSuperblock(String),
    /// No free metadata block is left.
    #[error("out of metadata space ({nr_blocks} blocks, all in use)")]
    MetadataNoSpace { nr_blocks: u64 },
    /// No free data block is left.
    #[error("out of data space ({nr_blocks} data blocks, all in use)")]
    DataNoSpace { nr_blocks: u64 },
    /// A reference count was decremented below zero or changed where it must not be.
    #[error("reference count error on {space} block {block}: {reason}")]
    RefCount { space: &'static str, block: u64, reason: String },
    /// The caller asked for something the format or the current state does not allow.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// No thin device has this id.
    #[error("thin device {0} does not exist")]
    UnknownDevice(DevId),
    /// A thin device with this id exists already.
    #[error("thin device {0} already exists")]
    DeviceExists(DevId),
    /// `set_transaction_id` was given the wrong current id.
    #[error("transaction id is {actual}, not {expected}")]
    TransactionId { expected: u64, actual: u64 },
    /// Only one metadata snapshot can be held at a time.
    #[error("a metadata snapshot is already held at block {0}")]
    MetadataSnapExists(MetaBlock),
    /// `release_metadata_snap` without a held snapshot.
    #[error("no metadata snapshot is held")]
    NoMetadataSnap,
    /// The superblock's needs_check flag is set: repair first, or open read-only.
    #[error("metadata needs checking (needs_check is set): run thin_check/thin_repair, or open read-only")]
    NeedsCheck,
    /// Writing to metadata opened read-only.
    #[error("metadata is open read-only")]
    ReadOnly,
    /// A previous commit failed half-way; the pool must be reopened.
    #[error("metadata is read-only after an earlier failure; reopen it")]
    Poisoned,
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The metadata block the error is about, if it is about one.
    pub fn block(&self) -> Option<MetaBlock> {
        match self {
            Error::Checksum { block, .. }
            | Error::BlockNumber { block, .. }
            | Error::Corrupt { block, .. }
            | Error::OutOfBounds { block, .. } => Some(*block),
            _ => None,
        }
    }

    pub fn corrupt(block: MetaBlock, kind: &'static str, reason: impl Into<String>) -> Self {
        Error::Corrupt { block, kind, reason: reason.into() }
    }
}
