//! `thin_metadata_size`: the engine's `fsck::metadata_size` parses its own (0.9.0-style)
//! arguments and renders the estimate.

use std::ffi::OsString;

use thinly_engine::fsck::metadata_size::{help_text, parse_args, render, Command};

use crate::exit;

pub fn run(prog: &str, args: &[OsString]) -> u8 {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    match parse_args(&args) {
        Ok(Command::Help) => {
            print!("{}", help_text(prog));
            exit::SUCCESS
        }
        Ok(Command::Version) => {
            println!("{}", crate::cli::tools_version_line());
            exit::SUCCESS
        }
        Ok(Command::Estimate(o)) => {
            print!("{}", render(&o, prog));
            exit::SUCCESS
        }
        Ok(_) => exit::USAGE,
        Err(e) => {
            // 0.9.0's wording and status for a rejected argument.
            eprintln!("{prog} - {e}");
            exit::SIZE_ARGUMENT
        }
    }
}
