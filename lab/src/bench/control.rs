//! A client of thinly's control socket that keeps ONE connection open and sends JSON
//! lines (`{"op":"snapshot",…}`), so that timing a snapshot measures the snapshot and not
//! a connect. The server drops clients idle for 30 s; this client reconnects before
//! sending after `CONTROL_IDLE` of silence (never after a request was sent, so a request
//! is never sent twice).

use super::limits;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Control {
    path: PathBuf,
    conn: Option<(BufReader<UnixStream>, UnixStream)>,
    last_used: Instant,
}

impl Control {
    pub fn connect(path: &Path) -> Result<Control> {
        let mut c = Control { path: path.to_path_buf(), conn: None, last_used: Instant::now() };
        c.reconnect()?;
        Ok(c)
    }

    fn reconnect(&mut self) -> Result<()> {
        let stream = UnixStream::connect(&self.path)
            .with_context(|| format!("connecting to {}", self.path.display()))?;
        stream.set_read_timeout(Some(limits::CONTROL_REPLY)).context("setting a read timeout")?;
        let writer = stream.try_clone().context("cloning the control connection")?;
        self.conn = Some((BufReader::new(stream), writer));
        Ok(())
    }

    /// Sends one request and returns its `result`; an `ok: false` answer is an error.
    pub fn request(&mut self, req: &Value) -> Result<Value> {
        if self.conn.is_none() || self.last_used.elapsed() > limits::CONTROL_IDLE {
            self.reconnect()?;
        }
        let (reader, writer) = self.conn.as_mut().context("no control connection")?;
        let mut line = serde_json::to_string(req).context("encoding a control request")?;
        line.push('\n');
        writer.write_all(line.as_bytes()).context("sending a control request")?;
        let mut answer = String::new();
        let n = reader.read_line(&mut answer).context("reading the control reply")?;
        self.last_used = Instant::now();
        if n == 0 {
            self.conn = None;
            bail!("the control socket closed before answering {req}");
        }
        let v: Value = serde_json::from_str(answer.trim())
            .with_context(|| format!("the control reply {answer:?} is not JSON"))?;
        if v.get("ok").and_then(Value::as_bool) != Some(true) {
            bail!("{req} failed: {}", v.get("error").and_then(Value::as_str).unwrap_or("?"));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    pub fn create(&mut self, name: &str, size_bytes: u64) -> Result<()> {
        self.request(&json!({"op": "create", "name": name, "size_bytes": size_bytes})).map(drop)
    }

    pub fn snapshot(&mut self, origin: &str, name: &str) -> Result<()> {
        self.request(&json!({"op": "snapshot", "origin": origin, "name": name, "read_only": false}))
            .map(drop)
    }

    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.request(&json!({"op": "delete", "name": name})).map(drop)
    }

    /// (used data bytes, used metadata bytes) from the pool's status.
    pub fn usage(&mut self) -> Result<(u64, u64)> {
        let v = self.request(&json!({"op": "status"}))?;
        let p = &v["pool"];
        let field =
            |k: &str| p[k].as_u64().with_context(|| format!("status has no numeric pool.{k}: {v}"));
        let data = field("used_data_blocks")? * field("data_block_size_bytes")?;
        let meta = field("used_metadata_blocks")? * 4096;
        Ok((data, meta))
    }
}
