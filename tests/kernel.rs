//! The kernel tests: thinly against the real Linux dm-thin and NBD client, booted in the
//! kernel lab's QEMU guest (`tests/kernel/README.md` says what each module checks).
//!
//! One test binary for all of them: one link instead of one per file, and the test harness
//! runs their guests side by side (`--test-threads`, default the number of cores) instead
//! of one binary after another. Run them with `cargo test --test kernel`; one module with
//! `cargo test --test kernel power_loss::`. Without the lab every guest test skips loudly
//! (fails under `CI`); the tests that need no guest run everywhere.

#[path = "kernel/attach.rs"]
mod attach;
#[path = "kernel/diff.rs"]
mod diff;
#[path = "kernel/grown_metadata.rs"]
mod grown_metadata;
#[path = "kernel/kernel_pool.rs"]
mod kernel_pool;
#[path = "kernel/nbd_host.rs"]
mod nbd_host;
#[path = "kernel/power_loss.rs"]
mod power_loss;
#[path = "kernel/repaired_pool.rs"]
mod repaired_pool;
#[path = "kernel/status_compat.rs"]
mod status_compat;
#[path = "kernel/thinly_pool.rs"]
mod thinly_pool;
