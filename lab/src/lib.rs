//! thinly-lab: the laboratory around thinly, kept out of the product crates.
//!
//! - [`kernel`]: the side-by-side lab with the Linux kernel's dm-thin — an operation-script
//!   format both implementations run, its runner for thinly and its translation for the
//!   guest kernel, observations of a pool's files and their comparison, and the harness the
//!   `tests/kernel.rs` tests boot the kernel lab's QEMU guest with.
//! - [`bench`]: the whole-system benchmark harness behind `thinly bench` (the `thinly`
//!   binary links this crate for that one command).
//!
//! Only tests, benchmarks and `thinly bench` use this crate. It may panic where a test
//! would (the harness asserts); the bench harness returns errors like any command.

pub mod bench;
pub mod kernel;
