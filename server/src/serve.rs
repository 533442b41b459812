//! `thinly serve`: open (or create) a pool and serve every volume over NBD, with a control
//! socket for management, until SIGINT or SIGTERM; then stop accepting, answer new
//! requests ESHUTDOWN, let what is in flight finish (at most --drain-timeout), commit and
//! exit 0. SIGHUP reloads the TLS certificates and keys, and the access policy of the
//! `--config` file (see `policy`).

use crate::control::ControlServer;
use crate::export::PoolRegistry;
use crate::policy::{Policy, Rules};
use crate::pool_dir::{default_pool_options, open_or_create, PoolArgs};
use crate::systemd;
use crate::tls::{TlsArgs, TlsPlan};
use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thinly_engine::pool::{AutoExtend, Pool, PoolEvent};
use thinly_nbd::{Server, ServerConfig, ServerHandle};

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
    /// Create the pool if `--pool DIR` holds none (without `--pool`, the default pool is
    /// created when missing).
    #[arg(long)]
    pub create: bool,
    /// TCP address to serve on ("none" for no TCP). Port 0 picks a free port (logged).
    #[arg(long, env = "THINLY_LISTEN", default_value = "127.0.0.1:10809")]
    pub listen: String,
    /// Unix socket to serve on [default: <pool>/nbd.sock]. Refused if a server answers
    /// there already.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Permissions of the unix socket, octal [default: 600, owner only].
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = octal_mode)]
    pub socket_mode: u32,
    /// Group owning the unix socket (name or number), for --socket-mode 660.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
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
    #[arg(long, value_name = "SIZE", value_parser = crate::pool_dir::size_arg)]
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
    /// Serve only this volume (repeatable); others are neither listed nor opened
    /// [default: every volume].
    #[arg(long = "export", value_name = "NAME")]
    pub exports: Vec<String>,
    /// Close a connection that has nothing in flight and sends nothing for this many
    /// seconds (0: never; a VM's idle disk may legitimately stay quiet for hours).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub idle_timeout: u64,
    /// Connections served at once by each listener (TCP and the unix socket separately).
    #[arg(long, value_name = "N", default_value_t = thinly_nbd::limits::MAX_CONNECTIONS)]
    pub max_connections: usize,
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

fn octal_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal mode like 600 or 660")),
    }
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
    fn server_config(&self, plan: &TlsPlan, policy: Option<&Arc<Policy>>) -> ServerConfig {
        ServerConfig {
            tls: plan.tls.clone(),
            access: policy.map(|p| Arc::clone(p) as Arc<dyn thinly_nbd::AccessPolicy>),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            max_connections: self.max_connections.max(1),
            handshake_timeout: (self.handshake_timeout > 0)
                .then(|| Duration::from_secs(self.handshake_timeout)),
            busy_poll: (self.busy_poll_us > 0).then(|| Duration::from_micros(self.busy_poll_us)),
            ..ServerConfig::default()
        }
    }
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if let Some(config) = &args.config {
        let merged = crate::config::merge(config, &crate::config::serve_words())?;
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
    let activated = systemd::activated_listeners()?;
    let tcp_addrs: Vec<String> = match &activated {
        Some(a) => {
            a.tcp.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect()
        }
        None => (args.listen != "none").then(|| args.listen.clone()).into_iter().collect(),
    };
    let plan = args.tls.plan(tls_deciding_address(&tcp_addrs)?)?;
    let policy = match &args.config {
        Some(c) => Rules::load(c)?.map(|rules| Arc::new(Policy::new(rules))),
        None => None,
    };

    let dir = args.pool.dir();
    if args.pool.explicit() && !args.create && !dir.join("metadata").exists() {
        anyhow::bail!(
            "no pool in {} (create one with `thinly pool create --pool {0}` or serve with \
             --create)",
            dir.display()
        );
    }
    let pool = open_or_create(
        &dir,
        &default_pool_options(),
        Some((DEFAULT_VOLUME, DEFAULT_VOLUME_BYTES)),
    )?;
    apply_settings(&pool, args)?;
    let events = pool.subscribe();

    let registry = Arc::new(PoolRegistry::new(pool.clone()).with_only(&args.exports));
    let mut server = Server::new(registry, args.server_config(&plan, policy.as_ref()));
    let socket = match activated {
        Some(a) => listen_activated(&mut server, a, &plan)?,
        None => listen(&mut server, args, &plan, &dir)?,
    };
    let handle = server.start().context("starting the NBD server")?;
    let control = ControlServer::start(pool.clone(), &dir, Some(handle.export_closer()))
        .context("starting the control socket")?;
    eprintln!("thinly: control socket {}", dir.join(crate::control::CONTROL_SOCKET).display());
    let watcher = spawn_event_watcher(events, dir.clone(), args.on_low_water.clone());
    systemd::notify_ready();

    let sig = wait_for_stop(&signals, || reload(args, &plan, policy.as_deref(), &handle))?;
    systemd::notify_stopping();
    eprintln!("thinly: {sig:?}: finishing in-flight requests and committing");
    handle.shutdown();
    control.stop();
    if let Some(socket) = socket {
        let _ = std::fs::remove_file(&socket);
    }
    pool.close().context("committing the pool")?;
    drop(pool);
    drop(watcher);
    eprintln!("thinly: pool {} closed cleanly", dir.display());
    Ok(())
}

/// The TCP address whose loopback-ness sets the default TLS mode: the first one that is
/// not loopback, else the first.
fn tls_deciding_address(addrs: &[String]) -> Result<Option<&str>> {
    for a in addrs {
        if !crate::tls::is_loopback(a)? {
            return Ok(Some(a));
        }
    }
    Ok(addrs.first().map(String::as_str))
}

/// Listens on --listen and the unix socket (created owner-only, or --socket-mode);
/// returns the socket's path. Refuses a path where a live server answers.
fn listen(
    server: &mut Server,
    args: &ServeArgs,
    plan: &TlsPlan,
    dir: &Path,
) -> Result<Option<PathBuf>> {
    if args.listen != "none" {
        let addr = server
            .listen_tcp_tls(args.listen.as_str(), plan.tcp)
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!("serving NBD on {addr}");
        eprintln!("thinly: serving NBD on tcp {addr} (TLS {:?})", plan.tcp);
    }
    let socket = args.socket.clone().unwrap_or_else(|| dir.join(NBD_SOCKET));
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        anyhow::bail!("a server is already answering on {}; not taking it over", socket.display());
    }
    if socket.exists() {
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    // Created under umask 077 so that no moment exists when others may connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = server.listen_unix_tls(&socket, plan.unix);
    nix::sys::stat::umask(old);
    bound.with_context(|| format!("listening on {}", socket.display()))?;
    let mode = std::fs::Permissions::from_mode(args.socket_mode);
    std::fs::set_permissions(&socket, mode)
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    if let Some(group) = &args.socket_group {
        let gid = group_id(group)?;
        nix::unistd::chown(&socket, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", socket.display()))?;
    }
    eprintln!("thinly: serving NBD on unix {} (mode {:o})", socket.display(), args.socket_mode);
    Ok(Some(socket))
}

/// A group by name or number.
fn group_id(group: &str) -> Result<nix::unistd::Gid> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    let g = nix::unistd::Group::from_name(group)
        .with_context(|| format!("looking up group {group}"))?
        .with_context(|| format!("no group named {group}"))?;
    Ok(g.gid)
}

/// Serves on the sockets systemd passed instead of --listen and --socket.
fn listen_activated(
    server: &mut Server,
    a: systemd::Activated,
    plan: &TlsPlan,
) -> Result<Option<PathBuf>> {
    for l in a.tcp {
        let addr = server.add_tcp_listener(l, plan.tcp).context("an activated TCP socket")?;
        eprintln!("thinly: serving NBD on activated tcp {addr} (TLS {:?})", plan.tcp);
    }
    for l in a.unix {
        server.add_unix_listener(l, plan.unix).context("an activated unix socket")?;
        eprintln!("thinly: serving NBD on an activated unix socket");
    }
    Ok(None)
}

/// Waits for SIGINT or SIGTERM, calling `on_hup` at each SIGHUP.
fn wait_for_stop(signals: &SigSet, on_hup: impl Fn()) -> Result<Signal> {
    loop {
        let sig = signals.wait().context("waiting for a signal")?;
        if sig != Signal::SIGHUP {
            return Ok(sig);
        }
        on_hup();
    }
}

/// SIGHUP: reloads the TLS certificates and keys, and the access policy of the config
/// file, then closes connections whose access shrank. A part that fails to load keeps
/// what is in force. Other settings of the file need a restart.
fn reload(args: &ServeArgs, plan: &TlsPlan, policy: Option<&Policy>, handle: &ServerHandle) {
    match plan.tls.as_ref().map(|t| t.reload()) {
        Some(Ok(())) => eprintln!("thinly: SIGHUP: TLS certificates and keys reloaded"),
        Some(Err(e)) => eprintln!("thinly: SIGHUP: TLS reload failed, keeping the old: {e}"),
        None => {}
    }
    let (Some(policy), Some(config)) = (policy, &args.config) else {
        return;
    };
    match Rules::load(config) {
        Ok(rules) => {
            // A file that lost all its rules denies everything rather than opening up:
            // turning the policy off takes a restart.
            policy.replace(rules.unwrap_or_default());
            let nr_closed = handle.recheck_access();
            eprintln!("thinly: SIGHUP: access policy reloaded; {nr_closed} connection(s) lost access and were closed");
        }
        Err(e) => eprintln!("thinly: SIGHUP: access policy reload failed, keeping the old: {e:#}"),
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
