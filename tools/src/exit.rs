//! Exit codes and error reporting of every tool, in one place.
//!
//! The codes are thin-provisioning-tools 1.x's: 0 success (for `check`: the metadata
//! passed), 64 failure (problems found, damaged or unusable input, I/O error: 1.x's
//! single error status, where 0.9.0 used 1 — lvm2 treats any non-zero status alike),
//! 2 a bad command line (clap's usage error). `--help` and `--version` exit 0.
//! `thin_metadata_size` follows the same rule (a refused size is a failure). Errors are
//! printed on stderr as `<tool>: <error>: <cause>…`; nothing panics on bad input.

use std::ffi::OsString;

/// The metadata passed / the operation succeeded.
pub const SUCCESS: u8 = 0;
/// Problems were found, or the operation failed (1.x; 0.9.0 used 1).
pub const FAILURE: u8 = 64;
/// A pool command (serve, create, snapshot …) failed.
pub const COMMAND_FAILED: u8 = 1;
/// The command line could not be parsed.
pub const USAGE: u8 = 2;

/// Prints `err` with its chain of causes and returns [`FAILURE`]. A reader that went
/// away (`thin_dump | head`, a FIFO closed early) is not reported: the C++ tools die
/// of SIGPIPE there without a word, and so a pipeline's stderr stays clean.
pub fn fail(prog: &str, err: &anyhow::Error) -> u8 {
    if !is_broken_pipe(err) {
        eprintln!("{prog}: {err:#}");
    }
    FAILURE
}

/// Whether `err` comes from writing to a pipe or FIFO nobody reads any more.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
            // Not println!: a closed stdout must not panic.
            let line = format!("{}\n", version_line.unwrap_or_default());
            let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
            Err(SUCCESS)
        }
        Err(e) => {
            // Help and version go to stdout; usage errors to stderr.
            let _ = e.print();
            Err(if e.use_stderr() { USAGE } else { SUCCESS })
        }
    }
}
