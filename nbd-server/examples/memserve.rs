//! Serves in-memory exports over NBD, for trying real clients by hand.
//!
//! ```text
//! cargo run -p thinly-nbd --example memserve -- --unix /tmp/mem.sock --tcp 127.0.0.1:10809 \
//!     --size 64M --name mem [--read-only] [--until-stdin-eof]
//! nbdinfo 'nbd+unix:///mem?socket=/tmp/mem.sock'
//! ```
//! Without `--until-stdin-eof` it serves until killed; with it, it shuts down
//! gracefully when standard input closes.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use thinly_nbd::{ExportTable, MemExport, Server, ServerConfig};

fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn usage() -> ! {
    eprintln!("usage: memserve [--unix PATH] [--tcp ADDR] [--size N[K|M|G]] [--name NAME] [--read-only] [--until-stdin-eof]");
    std::process::exit(2)
}

fn main() {
    let mut unix: Option<PathBuf> = None;
    let mut tcp: Option<String> = None;
    let mut size = 64u64 << 20;
    let mut name = String::from("mem");
    let mut read_only = false;
    let mut until_eof = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--unix" => unix = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--tcp" => tcp = Some(args.next().unwrap_or_else(|| usage())),
            "--size" => size = args.next().and_then(|s| parse_size(&s)).unwrap_or_else(|| usage()),
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--read-only" => read_only = true,
            "--until-stdin-eof" => until_eof = true,
            _ => usage(),
        }
    }
    if unix.is_none() && tcp.is_none() {
        usage();
    }
    let table = Arc::new(ExportTable::new());
    let export = MemExport::new(size).with_read_only(read_only);
    table.insert(&name, "thinly in-memory export", Arc::new(export));
    let mut server = Server::new(table, ServerConfig::default());
    if let Some(path) = &unix {
        if let Err(e) = server.listen_unix(path) {
            eprintln!("memserve: cannot listen on {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("listening on nbd+unix:///{name}?socket={}", path.display());
    }
    if let Some(addr) = &tcp {
        match server.listen_tcp(addr.as_str()) {
            Ok(bound) => println!("listening on nbd://{bound}/{name}"),
            Err(e) => {
                eprintln!("memserve: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    let handle = match server.start() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memserve: {e}");
            std::process::exit(1);
        }
    };
    if until_eof {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        handle.shutdown();
    } else {
        loop {
            std::thread::park();
        }
    }
}
