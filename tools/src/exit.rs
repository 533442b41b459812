//! Exit codes and error reporting of every tool, in one place.
//!
//! The codes are thin-provisioning-tools 1.x's: 0 success (for `check`: the metadata
//! passed), 64 failure (problems found, damaged or unusable input, I/O error: 1.x's
//! single error status, where 0.9.0 used 1 — lvm2 treats any non-zero status alike),
//! 2 a bad command line (clap's usage error). `--help` and `--version` exit 0.
//! `thin_metadata_size` keeps 0.9.0's behaviour (1 for a rejected argument). Errors are
//! printed on stderr as `<tool>: <error>: <cause>…`; nothing panics on bad input.

use std::ffi::OsString;

/// The metadata passed / the operation succeeded.
pub const SUCCESS: u8 = 0;
/// Problems were found, or the operation failed (1.x; 0.9.0 used 1).
pub const FAILURE: u8 = 64;
/// `thin_metadata_size`'s status for a rejected argument (0.9.0's).
pub const SIZE_ARGUMENT: u8 = 1;
/// A pool command (serve, create, snapshot …) failed.
pub const COMMAND_FAILED: u8 = 1;
/// The command line could not be parsed.
pub const USAGE: u8 = 2;

/// Prints `err` with its chain of causes and returns [`FAILURE`].
pub fn fail(prog: &str, err: &anyhow::Error) -> u8 {
    eprintln!("{prog}: {err:#}");
    FAILURE
}

/// Converts a command's result into an exit code.
pub fn code(prog: &str, r: anyhow::Result<u8>) -> u8 {
    match r {
        Ok(c) => c,
        Err(e) => fail(prog, &e),
    }
}

/// Parses `args` (without the program name) for `prog`; on `--help`/`--version` prints and
/// returns `Err(SUCCESS)`, on a bad command line prints the usage error and returns
/// `Err(USAGE)`.
pub fn parse<T: clap::Parser>(prog: &str, args: &[OsString]) -> Result<T, u8> {
    parse_with_version(prog, args, None)
}

/// As [`parse`], for a metadata tool: `-V`/`--version` prints `version_line` (the
/// thin-provisioning-tools version the tool implements) instead of clap's.
pub fn parse_tool<T: clap::Parser>(
    prog: &str,
    args: &[OsString],
    version_line: &str,
) -> Result<T, u8> {
    parse_with_version(prog, args, Some(version_line))
}

fn parse_with_version<T: clap::Parser>(
    prog: &str,
    args: &[OsString],
    version_line: Option<&str>,
) -> Result<T, u8> {
    let argv = std::iter::once(OsString::from(prog)).chain(args.iter().cloned());
    let cmd = T::command().name(prog.to_string()).bin_name(prog.to_string());
    let matches = cmd.try_get_matches_from(argv);
    let res = matches.and_then(|m| <T as clap::FromArgMatches>::from_arg_matches(&m));
    match res {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion && version_line.is_some() => {
            println!("{}", version_line.unwrap_or_default());
            Err(SUCCESS)
        }
        Err(e) => {
            // Help and version go to stdout; usage errors to stderr.
            let _ = e.print();
            Err(if e.use_stderr() { USAGE } else { SUCCESS })
        }
    }
}
