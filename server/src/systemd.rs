//! systemd conventions for `thinly serve`: socket activation (LISTEN_FDS, LISTEN_PID,
//! checked by `listenfd`) and readiness notification (`sd_notify` READY=1 once every
//! socket answers, STOPPING=1 when a drain begins). Both are no-ops outside systemd.
//! Example units: tools/systemd/thinly@.service and thinly@.socket.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use anyhow::{Context, Result};
use listenfd::ListenFd;
use sd_notify::NotifyState;

/// The listening sockets systemd passed, by kind.
#[derive(Debug, Default)]
pub struct Activated {
    pub tcp: Vec<TcpListener>,
    pub unix: Vec<UnixListener>,
}

/// The sockets passed by socket activation, or None when there are none. Each must be a
/// TCP or Unix stream listener.
pub fn activated_listeners() -> Result<Option<Activated>> {
    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut got = Activated::default();
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            got.tcp.push(l);
            continue;
        }
        let l = fds
            .take_unix_listener(i)
            .with_context(|| format!("socket activation: passed socket {i}"))?;
        got.unix.extend(l);
    }
    Ok(Some(got))
}

/// Tells systemd (if it is listening) that the server is ready.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        eprintln!("thinly: sd_notify READY=1 failed: {e}");
    }
}

/// Tells systemd (if it is listening) that the server is stopping.
pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Stopping]) {
        eprintln!("thinly: sd_notify STOPPING=1 failed: {e}");
    }
}
