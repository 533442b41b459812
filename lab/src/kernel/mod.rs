//! The side-by-side lab with the Linux kernel's dm-thin: the same operations on both
//! implementations, then what a reader of either pool sees.
//!
//! - [`opscript`]: a small operation-script format (create_thin, create_snap, write,
//!   discard, delete) that both implementations run.
//! - [`runner`]: applies a script to thinly through `thinly_engine::pool::Pool`; [`guest`]
//!   translates it into dmsetup messages and dd for the guest kernel.
//! - [`observe`] and [`compare`]: what a reader of either pool sees (per-block checksums),
//!   the mappings, the sharing structure and the space figures, read from a pool's files
//!   with the engine; and the side-by-side comparison of two observations.
//! - [`harness`]: boots the kernel lab's guest (`shared/kernel-lab/run-guest.sh`) for the
//!   tests in `tests/kernel.rs` (one binary; its modules in `tests/kernel/`), with
//!   `guest-lib.sh` (the guest scripts' helpers) beside it; `activate-pool.sh` beside them activates a pool in the guest by hand.
//!
//! The activation tables (`thinly_engine::kernel::activate`) stay in the engine because the
//! `thinly kernel-script` command prints them. Apart from [`harness`], nothing here runs
//! QEMU or dmsetup. Pools are read read-only, except by [`runner`], which creates the pool it
//! writes.

pub mod compare;
pub mod guest;
pub mod harness;
pub mod observe;
pub mod opscript;
pub mod runner;

pub use thinly_engine::kernel::{disk_serial, sh_quote};
