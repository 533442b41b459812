//! Interop with the Linux kernel's dm-thin: the same pool, two implementations side by side.
//!
//! - [`activate`]: the device-mapper tables that make the kernel serve a thinly pool (a
//!   `thin-pool` target over the pool's `metadata` and `data` files, a `thin` target per
//!   volume), rendered as a shell script for a host (losetup + dmsetup) or for the kernel
//!   lab's guest (disks found by serial). `thinly kernel-script` prints it.
//! - [`opscript`]: a small operation-script format (create_thin, create_snap, write,
//!   discard, delete) that both implementations run.
//! - [`runner`]: applies a script to thinly through [`crate::pool::Pool`]; [`guest`]
//!   translates it into dmsetup messages and dd for the guest kernel.
//! - [`observe`] and [`compare`]: what a reader of either pool sees (per-block checksums),
//!   the mappings, the sharing structure and the space figures, read from a pool's files
//!   with this engine; and the side-by-side comparison of two observations.
//!
//! Nothing here runs QEMU or dmsetup; the tests in `tests/kernel_*.rs` do, through the kernel
//! lab (`shared/kernel-lab/run-guest.sh`). The module reads pools read-only, except
//! [`runner`], which creates the pool it writes.

pub mod activate;
pub mod compare;
pub mod guest;
pub mod observe;
pub mod opscript;
pub mod runner;

/// The serial QEMU gives a `-d FILE` disk (kernel lab's run-guest.sh): the file's base
/// name with characters other than `A-Za-z0-9._-` replaced by `_`, cut to 20 characters.
pub fn disk_serial(file_name: &str) -> String {
    file_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .take(20)
        .collect()
}

/// Quotes a word for sh (single quotes; a quote inside becomes '\'').
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@+=,".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}
