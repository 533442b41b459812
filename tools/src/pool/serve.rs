//! `thinly serve`: open (or create) a pool and serve every volume over NBD, with a control
//! socket for management, until SIGINT or SIGTERM; then stop accepting, answer new
//! requests ESHUTDOWN, let what is in flight finish (at most --drain-timeout), commit and
//! exit 0. SIGHUP reloads the TLS certificates and keys.

use super::control::ControlServer;
use super::export::PoolRegistry;
use super::tls::{TlsArgs, TlsPlan};
use super::{default_pool_options, open_or_create, PoolArgs};
use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thinly_engine::pool::{AutoExtend, Pool, PoolEvent};
use thinly_nbd::{Server, ServerConfig};

/// The NBD socket's file name in the pool directory (unless --socket says otherwise).
pub const NBD_SOCKET: &str = "nbd.sock";
/// The volume `thinly serve` creates in a new default pool, and its size.
pub const DEFAULT_VOLUME: &str = "vol0";
pub const DEFAULT_VOLUME_BYTES: u64 = 10 << 30;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of these flags as keys (`listen = "0.0.0.0:10809"`); flags on
    /// the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// TCP address to serve on ("none" for no TCP). Port 0 picks a free port (logged).
    #[arg(long, default_value = "127.0.0.1:10809")]
    pub listen: String,
    /// Unix socket to serve on [default: <pool>/nbd.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Command run (by sh -c) when free data blocks fall to the low water mark; the pool's
    /// figures are in THINLY_POOL, THINLY_FREE_BLOCKS, THINLY_TOTAL_BLOCKS,
    /// THINLY_BLOCK_SIZE and THINLY_EVENT.
    #[arg(long, value_name = "CMD")]
    pub on_low_water: Option<String>,
    /// Low water mark in data blocks (stored in pool.json).
    #[arg(long, value_name = "BLOCKS")]
    pub low_water_mark: Option<u64>,
    /// At the low water mark, grow the data file by this percentage …
    #[arg(long, value_name = "PERCENT", requires = "auto_extend_max")]
    pub auto_extend_percent: Option<u32>,
    /// … up to this size (K/M/G/T).
    #[arg(long, value_name = "SIZE", value_parser = super::size_arg)]
    pub auto_extend_max: Option<u64>,
    /// Seconds a client may take from connecting to the end of the handshake (0: no
    /// limit, for clients that connect long before they speak, like a VM's serial port).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Longest time a connection with nothing in flight polls its socket for the next
    /// request before it sleeps (0: never poll). Saves a thread wake-up per request of a
    /// client that waits for each reply (queue depth 1: about halves its latency here), at
    /// the price of a CPU spinning meanwhile. Adaptive: a connection whose requests stop
    /// coming within the time soon stops polling.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 50)]
    pub busy_poll_us: u64,
    /// On SIGTERM/SIGINT: seconds to let requests in flight finish (new ones get
    /// ESHUTDOWN) before closing connections anyway; then commit and exit.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Log lines as text or as one JSON object a line (for log collectors). The level
    /// comes from RUST_LOG [default: warn, and info for connections].
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; one line per connection at info (see thinly_nbd's conn module).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,thinly_nbd=info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt.json().flatten_event(true).try_init(),
    };
}

impl ServeArgs {
    fn server_config(&self, plan: &TlsPlan) -> ServerConfig {
        ServerConfig {
            tls: plan.tls.clone(),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            handshake_timeout: (self.handshake_timeout > 0)
                .then(|| Duration::from_secs(self.handshake_timeout)),
            busy_poll: (self.busy_poll_us > 0).then(|| Duration::from_micros(self.busy_poll_us)),
            ..ServerConfig::default()
        }
    }
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if let Some(config) = &args.config {
        let merged = super::config::merge(config, &super::config::serve_words())?;
        return serve(&merged);
    }
    serve(args)
}

fn serve(args: &ServeArgs) -> Result<()> {
    init_logging(args.log_format);
    // SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken by `wait` below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block().context("blocking SIGINT, SIGTERM and SIGHUP")?;
    let listen = (args.listen != "none").then_some(args.listen.as_str());
    let plan = args.tls.plan(listen)?;

    let dir = args.pool.dir();
    let pool = open_or_create(
        &dir,
        &default_pool_options(),
        Some((DEFAULT_VOLUME, DEFAULT_VOLUME_BYTES)),
    )?;
    apply_settings(&pool, args)?;
    let events = pool.subscribe();

    let registry = Arc::new(PoolRegistry::new(pool.clone()));
    let mut server = Server::new(registry, args.server_config(&plan));
    if let Some(listen) = listen {
        let addr = server
            .listen_tcp_tls(listen, plan.tcp)
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!("serving NBD on {addr}");
        eprintln!("thinly: serving NBD on tcp {addr} (TLS {:?})", plan.tcp);
    }
    let socket = args.socket.clone().unwrap_or_else(|| dir.join(NBD_SOCKET));
    if socket.exists() {
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    server
        .listen_unix_tls(&socket, plan.unix)
        .with_context(|| format!("listening on {}", socket.display()))?;
    eprintln!("thinly: serving NBD on unix {}", socket.display());
    let handle = server.start().context("starting the NBD server")?;
    let control =
        ControlServer::start(pool.clone(), &dir).context("starting the control socket")?;
    eprintln!("thinly: control socket {}", dir.join(super::control::CONTROL_SOCKET).display());
    let watcher = spawn_event_watcher(events, dir.clone(), args.on_low_water.clone());

    let sig = wait_for_stop(&signals, &plan)?;
    eprintln!("thinly: {sig:?}: finishing in-flight requests and committing");
    handle.shutdown();
    control.stop();
    let _ = std::fs::remove_file(&socket);
    pool.close().context("committing the pool")?;
    drop(pool);
    drop(watcher);
    eprintln!("thinly: pool {} closed cleanly", dir.display());
    Ok(())
}

/// Waits for SIGINT or SIGTERM; on SIGHUP reloads the TLS certificates and keys (a
/// failed reload keeps the current ones).
fn wait_for_stop(signals: &SigSet, plan: &TlsPlan) -> Result<Signal> {
    loop {
        let sig = signals.wait().context("waiting for a signal")?;
        if sig != Signal::SIGHUP {
            return Ok(sig);
        }
        match plan.tls.as_ref().map(|t| t.reload()) {
            Some(Ok(())) => eprintln!("thinly: SIGHUP: TLS certificates and keys reloaded"),
            Some(Err(e)) => eprintln!("thinly: SIGHUP: TLS reload failed, keeping the old: {e}"),
            None => eprintln!("thinly: SIGHUP: nothing to reload"),
        }
    }
}

fn apply_settings(pool: &Pool, args: &ServeArgs) -> Result<()> {
    if args.low_water_mark.is_none() && args.auto_extend_percent.is_none() {
        return Ok(());
    }
    let mut s = pool.settings();
    if let Some(m) = args.low_water_mark {
        s.low_water_mark_blocks = m;
    }
    if let (Some(percent), Some(max_bytes)) = (args.auto_extend_percent, args.auto_extend_max) {
        s.auto_extend = Some(AutoExtend { percent, max_bytes });
    }
    pool.set_settings(s).context("storing the pool's settings")?;
    Ok(())
}

/// Logs pool events and runs the low-water hook.
fn spawn_event_watcher(
    events: std::sync::mpsc::Receiver<PoolEvent>,
    dir: PathBuf,
    hook: Option<String>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("thinly-events".into())
        .spawn(move || {
            for event in events {
                eprintln!("thinly: pool event: {event:?}");
                if let (
                    PoolEvent::LowWaterMark { free_blocks, total_blocks, block_size_bytes },
                    Some(cmd),
                ) = (&event, &hook)
                {
                    run_hook(cmd, &dir, *free_blocks, *total_blocks, *block_size_bytes);
                }
            }
        })
        .ok()
}

fn run_hook(cmd: &str, dir: &Path, free: u64, total: u64, block_size: u64) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("THINLY_EVENT", "low_water_mark")
        .env("THINLY_POOL", dir)
        .env("THINLY_FREE_BLOCKS", free.to_string())
        .env("THINLY_TOTAL_BLOCKS", total.to_string())
        .env("THINLY_BLOCK_SIZE", block_size.to_string())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("thinly: low-water hook {cmd:?} exited with {s}"),
        Err(e) => eprintln!("thinly: could not run the low-water hook {cmd:?}: {e}"),
    }
}
