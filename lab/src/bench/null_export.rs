//! thinly's own NBD server over a null export: no storage at all, so what it measures is
//! the ceiling of thinly's transport (protocol core, server loop, worker threads, unix
//! socket) — the figure no thinly volume can beat. nbdkit's null plugin is the same thing
//! for a peer's server, not a ceiling of thinly.
//!
//! Reads return zeroes and are reported as data (so a READ carries its bytes, as a volume's
//! provisioned blocks do); writes, zeroing, trims and flushes succeed at once and keep
//! nothing. One consequence, stated in the tables' README: reads of a thinly volume's
//! unprovisioned blocks are answered with hole chunks (no payload), so those rows may
//! exceed this ceiling; it bounds every row that moves data. It runs as
//! its own process (`thinly bench serve-null`, hidden) so the harness starts, measures (CPU
//! time from /proc) and stops it like every other server.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use std::io;
use std::path::Path;
use std::sync::Arc;
use thinly_nbd::{Export, ExportTable, Extent, Server, ServerConfig, ZeroFlags};

/// An export that stores nothing.
pub struct NullExport {
    size_bytes: u64,
}

impl Export for NullExport {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    fn read_only(&self) -> bool {
        false
    }
    fn can_multi_conn(&self) -> bool {
        true
    }
    fn preferred_block_size(&self) -> u32 {
        4096
    }
    fn read(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, _offset: u64, _data: &[u8], _fua: bool) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64, _flags: ZeroFlags) -> io::Result<()> {
        Ok(())
    }
    fn trim(&self, _offset: u64, _len: u64, _fua: bool) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn block_status(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(vec![Extent { length: len.max(1), flags: 0 }])
    }
    fn allocation_depth(&self, _offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        Ok(vec![(len.max(1), 1)])
    }
}

/// Serves a null export named `name` of `size_bytes` on the unix socket `socket`, with the
/// server settings `thinly serve` uses by default (busy-polling included), until SIGTERM
/// or SIGINT.
pub fn serve(socket: &Path, name: &str, size_bytes: u64) -> Result<()> {
    // Block the signals before any server thread exists, so every thread inherits the mask
    // and the signal is taken here by sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("blocking SIGTERM and SIGINT")?;
    let table = Arc::new(ExportTable::new());
    table.insert(name, "thinly bench null export", Arc::new(NullExport { size_bytes }));
    let config =
        ServerConfig { busy_poll: Some(super::limits::NULL_BUSY_POLL), ..ServerConfig::default() };
    let mut server = Server::new(table, config);
    server.listen_unix(socket).with_context(|| format!("listening on {}", socket.display()))?;
    let handle = server.start().context("starting the NBD server")?;
    let sig = stop.wait().context("waiting for SIGTERM")?;
    eprintln!("thinly bench serve-null: {sig:?}, stopping");
    handle.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_export_reads_zeroes_as_data_and_keeps_no_write() {
        let e = NullExport { size_bytes: 1 << 20 };
        e.write(0, &[7u8; 512], true).expect("write");
        let mut buf = [1u8; 512];
        e.read(0, &mut buf).expect("read");
        assert!(buf.iter().all(|b| *b == 0));
        let runs = e.block_status(0, 4096).expect("status");
        assert_eq!(runs, vec![Extent { length: 4096, flags: 0 }]);
    }
}
