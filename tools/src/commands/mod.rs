//! One module per tool: parse the arguments (clap, see `cli`), call the engine's `fsck`
//! library, print what the tool prints, return the exit code (see `exit`).

mod check;
mod delta;
mod dump;
pub mod live;
mod ls;
mod metadata_size;
mod repair;
mod restore;
mod rmap;
mod trim;

use std::ffi::OsString;

use crate::cli::Tool;
use crate::exit;

/// Runs `tool` as program `prog` with `args` (program name excluded).
pub fn run(tool: Tool, prog: &str, args: &[OsString]) -> u8 {
    let normalised = attached_optional_values(args);
    let args = normalised.as_slice();
    macro_rules! go {
        ($args:ty, $module:ident) => {
            match exit::parse_tool::<$args>(prog, args, &crate::cli::tools_version_line()) {
                Ok(a) => exit::code(prog, $module::run(&a)),
                Err(code) => code,
            }
        };
    }
    match tool {
        Tool::Check => go!(crate::cli::CheckArgs, check),
        Tool::Dump => go!(crate::cli::DumpArgs, dump),
        Tool::Restore => go!(crate::cli::RestoreArgs, restore),
        Tool::Repair => go!(crate::cli::RepairArgs, repair),
        Tool::Ls => go!(crate::cli::LsArgs, ls),
        Tool::Delta => go!(crate::cli::DeltaArgs, delta),
        Tool::Rmap => go!(crate::cli::RmapArgs, rmap),
        Tool::Trim => go!(crate::cli::TrimArgs, trim),
        Tool::MetadataSize => go!(crate::cli::MetadataSizeArgs, metadata_size),
    }
}

/// getopt lets an optional value be attached to its short option (`-m8`); clap wants
/// `-m=8`. Rewrites the former into the latter for `-m`, the only such option.
fn attached_optional_values(args: &[OsString]) -> Vec<OsString> {
    args.iter()
        .map(|a| match a.to_str().and_then(|s| s.strip_prefix("-m")) {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                OsString::from(format!("-m={v}"))
            }
            _ => a.clone(),
        })
        .collect()
}
