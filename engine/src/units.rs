//! Newtypes that keep the address spaces apart: a metadata block number can never be
//! passed where a data block or a virtual block is expected.

use std::fmt;

macro_rules! block_newtype {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

block_newtype!(
    /// A 4 KiB block of the metadata device; block N lives at byte N × 4096.
    MetaBlock,
    u64
);
block_newtype!(
    /// A block of the data device, `data_block_size` sectors long.
    DataBlock,
    u64
);
block_newtype!(
    /// A block of a thin volume's virtual address space.
    VirtBlock,
    u64
);
block_newtype!(
    /// A thin device id (24 bits in the kernel's message vocabulary).
    DevId,
    u64
);
