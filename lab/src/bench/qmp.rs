//! A client of QEMU's monitor protocol (QMP) on a unix socket, enough to time live
//! external snapshots of qemu-storage-daemon (`blockdev-snapshot-sync`). One connection,
//! opened before timing starts; each command waits for its `return` (events in between
//! are skipped) or fails with QMP's `error`.

use super::limits;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to QMP at {}", path.display()))?;
        stream.set_read_timeout(Some(limits::CONTROL_REPLY)).context("setting a read timeout")?;
        let writer = stream.try_clone().context("cloning the QMP connection")?;
        let mut q = Qmp { reader: BufReader::new(stream), writer };
        let greeting = q.line()?;
        if greeting.get("QMP").is_none() {
            bail!("no QMP greeting: {greeting}");
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn line(&mut self) -> Result<Value> {
        let mut text = String::new();
        let n = self.reader.read_line(&mut text).context("reading from QMP")?;
        if n == 0 {
            bail!("QMP closed the connection");
        }
        serde_json::from_str(text.trim()).with_context(|| format!("QMP sent {text:?}"))
    }

    /// Runs `command` with `arguments`; returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut req = serde_json::to_string(&json!({"execute": command, "arguments": arguments}))
            .context("encoding a QMP command")?;
        req.push('\n');
        self.writer.write_all(req.as_bytes()).context("sending a QMP command")?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command} failed: {}", e["desc"].as_str().unwrap_or("?"));
            }
            // An event ({"event": …}): not the answer.
        }
    }

    /// A live external snapshot: a new qcow2 overlay `file` (node `new_node`) on top of
    /// `node`, which becomes the backing file of what the export serves.
    pub fn snapshot(&mut self, node: &str, file: &Path, new_node: &str) -> Result<()> {
        let args = json!({
            "node-name": node,
            "snapshot-file": file.display().to_string(),
            "snapshot-node-name": new_node,
            "format": "qcow2",
        });
        self.execute("blockdev-snapshot-sync", args).map(drop)
    }
}
