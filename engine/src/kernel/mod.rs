//! Interop with the Linux kernel's dm-thin: the same pool, two implementations side by side.
//!
//! - [`activate`]: the device-mapper tables that make the kernel serve a thinly pool (a
//!   `thin-pool` target over the pool's `metadata` and `data` files, a `thin` target per
//!   volume), rendered as a shell script for a host (losetup + dmsetup) or for the kernel
//!   lab's guest (disks found by serial). `thinly kernel-script` prints it.
//!
//! Only what that user command needs lives here; the lab that runs both implementations
//! side by side (operation scripts, their runners, observations and comparisons, the QEMU
//! harness) is the development crate `thinly-lab` (`lab/`). The module reads pools read-only.

pub mod activate;

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
