//! thinly-server: the daemon behind `thinly serve`. It opens (or creates) a pool and serves
//! every volume as an NBD export (`export`: a `Volume` behind the `thinly_nbd::Export`
//! trait), takes management requests as JSON lines on the control socket (`control`), and
//! owns what a running server needs around that: TLS plans (`tls`), the config file
//! (`config`), the access policy (`policy`), systemd readiness and socket activation
//! (`systemd`), and the one mapping of engine errors to errnos and NBD errors (`errno`).
//! With the `testing` feature, `fuzzing` drives a control-socket session over arbitrary
//! bytes (the fuzz target's harness).
//!
//! Layering: the NBD protocol crate knows nothing of the engine and the engine nothing of
//! sockets; this crate is the one place where they meet. The `thinly` command (thinly-tools)
//! parses arguments, calls in here and prints; it keeps no server logic of its own.

pub mod config;
pub mod control;
pub mod errno;
pub mod export;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
pub mod guard;
pub mod policy;
pub mod pool_dir;
pub mod serve;
pub mod size;
pub mod systemd;
pub mod tls;
