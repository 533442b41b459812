//! `thinly`: the command-line front end. This file only dispatches: by the name the binary
//! was invoked under (`thin_check`, `thin_dump`, … via a symlink) or by the first
//! argument (`thinly check …`). Each tool's arguments and its call into the engine's
//! `fsck` library live in `commands/`; exit codes and error reporting in `exit.rs`.

mod attach;
mod cli;
mod commands;
mod exit;
mod files;
mod install_links;
mod kernel;
mod pool;

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let prog = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("thinly")
        .to_string();
    let code = match cli::Tool::from_program_name(&prog) {
        Some(tool) => commands::run(tool, &prog, &args[1..]),
        None => cli::run_thinly(&args),
    };
    ExitCode::from(code)
}
