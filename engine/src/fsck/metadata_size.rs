//! `thin_metadata_size`: the metadata-device size estimate of thin-provisioning-tools
//! (spec §8.4), and the argument handling and output of Debian's 0.9.0 binary.
//!
//! - 0.9.0: `1 + floor(floor(2 · pool_sectors / block_sectors) / 252) + max_thins` 4 KiB
//!   blocks (252 = (4096 − 64) / 16 "mappings per block", doubled for half-full leaves).
//! - 1.x: `min(1 + ceil(nr_blocks / 126) + max_thins, 4 161 600)` blocks.
//!
//! The 0.9.0 binary's arithmetic is C `unsigned long long` (wrapping) and `double`;
//! [`parse_args`] and [`render`] reproduce it, including its quirks (a unit-less size is
//! in sectors and its echo takes the `-u` unit given *before* it; `atoll` saturates).

use super::error::{Error, Result};

/// Metadata block size in bytes.
const BLOCK_BYTES: u64 = 4096;
/// 0.9.0's "mappings per block": (node 4096 − header 64) / entry 16.
pub const MAPPINGS_PER_BLOCK_V09: u64 = (4096 - 64) / 16;
/// 1.x assumes leaves half full: 252 block_time entries / 2.
pub const ENTRIES_PER_LEAF_V1: u64 = 126;
/// Largest metadata device, in blocks (spec §1: 255 bitmaps × 16 320).
pub const MAX_METADATA_BLOCKS: u64 = 4_161_600;

/// 0.9.0's estimate in 4 KiB blocks (wrapping like the C it mirrors).
pub fn estimate_blocks_v09(pool_sectors: u64, block_sectors: u64, max_thins: u64) -> u64 {
    let leaves = pool_sectors.wrapping_mul(2) / block_sectors.max(1) / MAPPINGS_PER_BLOCK_V09;
    1 + leaves.wrapping_add(max_thins)
}

/// 1.x's estimate in bytes for `nr_data_blocks` data blocks.
pub fn estimate_bytes_v1(nr_data_blocks: u64, max_thins: u64) -> u64 {
    let leaves = nr_data_blocks.div_ceil(ENTRIES_PER_LEAF_V1);
    let blocks = (1 + leaves).saturating_add(max_thins);
    blocks.min(MAX_METADATA_BLOCKS) * BLOCK_BYTES
}

/// Unit letters, names and factors in the tool's order (`-u`, and size suffixes).
const UNIT_CHARS: &[u8; 18] = b"bskKmMgGtTpPeEzZyY";
const UNIT_NAMES: [&str; 18] = [
    "bytes",
    "sectors",
    "kibibytes",
    "kilobytes",
    "mebibytes",
    "megabytes",
    "gibibytes",
    "gigabytes",
    "tebibytes",
    "terabytes",
    "pebibytes",
    "petabytes",
    "ebibytes",
    "exabytes",
    "zebibytes",
    "zetabytes",
    "yobibytes",
    "yottabytes",
];
const SECTORS: usize = 1;

/// Bytes per unit, as the tool computes them (powers past 2^64 wrap, e.g. zebibytes → 0).
fn unit_factor(idx: usize) -> u64 {
    let mut f = [1u64, 512, 1024, 1000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for u in (4..18).step_by(2) {
        f[u] = f[u - 2].wrapping_mul(1024);
        f[u + 1] = f[u - 1].wrapping_mul(1000);
    }
    f[idx]
}

/// Index of a unit given as one letter or a prefix of its name (first match wins).
fn unit_index(s: &str) -> Option<usize> {
    if s.len() == 1 {
        return UNIT_CHARS.iter().position(|&c| c == s.as_bytes()[0]);
    }
    UNIT_NAMES.iter().position(|name| name.starts_with(s))
}

/// How `-n` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NumericOnly {
    /// No `-n`: the full sentence.
    #[default]
    No,
    /// `-n`: the number alone.
    Plain,
    /// `-n short`: the number and the unit letter.
    Short,
    /// `-n long`: the number and the unit name.
    Long,
}

/// Parsed options of one `thin_metadata_size` run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    pub block_sectors: u64,
    pub pool_sectors: u64,
    pub max_thins: u64,
    /// Index into the unit table; sectors unless `-u` was given.
    pub unit: usize,
    pub numeric: NumericOnly,
    /// The sizes as the tool echoes them ("64kibibytes").
    pub block_text: String,
    pub pool_text: String,
    pub max_thins_text: String,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    Help,
    Version,
    Estimate(Options),
}

fn usage<T>(message: &'static str) -> Result<T> {
    Err(Error::Usage { message })
}

/// C's `atoll` on a run of digits: saturates at `i64::MAX`.
fn atoll(digits: &str) -> u64 {
    digits
        .parse::<u64>()
        .map_or(if digits.is_empty() { 0 } else { i64::MAX as u64 }, |n| n.min(i64::MAX as u64))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Block,
    Pool,
    Thins,
}

impl Options {
    fn size(&mut self, which: Which, arg: &str) -> Result<()> {
        let slot = match which {
            Which::Block => self.block_sectors,
            Which::Pool => self.pool_sectors,
            Which::Thins => self.max_thins,
        };
        if slot != 0 {
            return usage("option already given!");
        }
        let split = arg.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, suffix) = arg.split_at(split);
        let given = match suffix {
            "" => None,
            s => Some(unit_index(s).map_or_else(|| usage("Invalid unit specifier!"), Ok)?),
        };
        let bytes = atoll(digits).wrapping_mul(unit_factor(given.unwrap_or(SECTORS)));
        let value = match (given, which) {
            (Some(_), Which::Thins) => bytes,
            _ => bytes / 512,
        };
        let echo_unit = given.unwrap_or(self.unit);
        let mut text = digits.to_string();
        if which != Which::Thins || given.is_some() {
            text.push_str(UNIT_NAMES[echo_unit]);
        }
        match which {
            Which::Block => (self.block_sectors, self.block_text) = (value, text),
            Which::Pool => (self.pool_sectors, self.pool_text) = (value, text),
            Which::Thins => (self.max_thins, self.max_thins_text) = (value, text),
        }
        Ok(())
    }

    fn numeric_only(&mut self, arg: Option<&str>) -> Result<()> {
        if self.numeric != NumericOnly::No {
            return usage("-n already given!");
        }
        self.numeric = match arg {
            None => NumericOnly::Plain,
            Some(a) if !a.is_empty() && "long".starts_with(a) => NumericOnly::Long,
            Some(a) if !a.is_empty() && "short".starts_with(a) => NumericOnly::Short,
            Some(_) => return usage("-n invalid option argument"),
        };
        Ok(())
    }

    fn check(&self) -> Result<()> {
        match self {
            o if o.block_sectors == 0 => usage("block size required!"),
            o if o.pool_sectors == 0 => usage("pool size required!"),
            o if o.max_thins == 0 => usage("max thins required!"),
            o if !o.block_sectors.is_power_of_two() => usage("block size must be 2^^N"),
            o if o.pool_sectors <= o.block_sectors => {
                usage("pool size must be larger than block size")
            }
            _ => Ok(()),
        }
    }
}

const LONG_OPTIONS: [(&str, char); 7] = [
    ("block-size", 'b'),
    ("pool-size", 's'),
    ("max-thins", 'm'),
    ("unit", 'u'),
    ("numeric-only", 'n'),
    ("help", 'h'),
    ("version", 'V'),
];

/// Parses the arguments after the program name the way the tool's `getopt_long` does
/// (`b:s:m:u:n::hV`, long names and unique prefixes, non-options ignored), then checks
/// them. Errors carry the tool's message.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Command> {
    let mut o = Options { unit: SECTORS, ..Options::default() };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref();
        i += 1;
        let (opt, attached): (char, Option<&str>) = if arg == "--" {
            break;
        } else if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = long.split_once('=').map_or((long, None), |(n, v)| (n, Some(v)));
            let mut hits = LONG_OPTIONS.iter().filter(|(full, _)| full.starts_with(name));
            let exact = LONG_OPTIONS.iter().find(|(full, _)| *full == name);
            match (exact, hits.next(), hits.next()) {
                (Some(&(_, c)), _, _) | (None, Some(&(_, c)), None) => (c, value),
                _ => return usage("Invalid option!"),
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let c = short.chars().next().unwrap_or('?');
            let rest = &short[c.len_utf8()..];
            (c, (!rest.is_empty()).then_some(rest))
        } else {
            continue; // operands are ignored
        };
        let mut value = || -> Result<String> {
            match attached {
                Some(v) => Ok(v.to_string()),
                None if i < args.len() => {
                    i += 1;
                    Ok(args[i - 1].as_ref().to_string())
                }
                None => usage("option requires an argument"),
            }
        };
        match opt {
            'b' => o.size(Which::Block, &value()?)?,
            's' => o.size(Which::Pool, &value()?)?,
            'm' => o.size(Which::Thins, &value()?)?,
            'u' => {
                o.unit = unit_index(&value()?)
                    .map_or_else(|| usage("output unit specifier invalid!"), Ok)?
            }
            'n' => o.numeric_only(attached)?,
            'h' => return Ok(Command::Help),
            'V' => return Ok(Command::Version),
            _ => return usage("Invalid option!"),
        }
    }
    o.check()?;
    Ok(Command::Estimate(o))
}

/// The tool's `-h` text: a title, a usage line, then one tab-indented line per option
/// with the option in 4 columns and its long form (plus unit letters) in 44.
pub fn help_text(prog: &str) -> String {
    let units = std::str::from_utf8(UNIT_CHARS).unwrap_or_default();
    let rows = [
        (
            "-b",
            format!("--block-size BLOCKSIZE[{units}]"),
            "Block size of thin provisioned devices.",
        ),
        ("-s", format!("--pool-size SIZE[{units}]"), "Size of pool device."),
        (
            "-m",
            format!("--max-thins #MAXTHINS[{units}]"),
            "Maximum sum of all thin devices and snapshots.",
        ),
        ("-u", format!("--unit {{{units}}}"), "Output unit specifier."),
        (
            "-n",
            "--numeric-only [short|long]".into(),
            "Output numeric value only (optionally with short/long unit identifier).",
        ),
        ("-h", "--help".into(), "This help."),
        ("-V", "--version".into(), "Print thin provisioning tools version."),
    ];
    let mut out =
        format!("Thin Provisioning Metadata Device Size Calculator.\nUsage: {prog} [options]\n");
    for (short, long, what) in rows {
        out.push_str(&format!("\t{short:<4}{long:<44}{what}\n"));
    }
    out
}

/// The estimate in the requested unit, as the tool's `double`.
pub fn estimate_in_unit(o: &Options) -> f64 {
    let blocks = (o.pool_sectors.wrapping_mul(2) / o.block_sectors.max(1) / MAPPINGS_PER_BLOCK_V09)
        .wrapping_add(o.max_thins);
    (1.0 + blocks as f64) * BLOCK_BYTES as f64 / unit_factor(o.unit) as f64
}

/// C's `%0.2e`: two decimals and an exponent of at least two digits.
fn c_exp(r: f64) -> String {
    let s = format!("{r:.2e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let e: i32 = exp.parse().unwrap_or(0);
            let sign = if e < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", e.unsigned_abs())
        }
        None => s,
    }
}

/// The number as the tool prints it: an integer when whole, else `%0.2f`, or `%0.2e`
/// when the fraction is below 0.01.
pub fn format_number(r: f64) -> String {
    let whole = r.floor();
    if r == whole {
        // An infinite quotient (a unit factor that wrapped to 0) prints as 0 on x86-64.
        return if r.is_finite() { format!("{}", r as u64) } else { "0".into() };
    }
    if r - whole < 1e-2 {
        c_exp(r)
    } else {
        format!("{r:.2}")
    }
}

/// The line the tool prints on stdout for `o` (with its newline); `prog` is its name.
pub fn render(o: &Options, prog: &str) -> String {
    let n = format_number(estimate_in_unit(o));
    let u = o.unit;
    match o.numeric {
        NumericOnly::No => format!(
            "{prog} - {n} {} estimated metadata area size for \"--block-size={} --pool-size={} --max-thins={}\"\n",
            UNIT_NAMES[u], o.block_text, o.pool_text, o.max_thins_text
        ),
        NumericOnly::Plain => format!("{n}\n"),
        NumericOnly::Short => format!("{n}{}\n", UNIT_CHARS[u] as char),
        NumericOnly::Long => format!("{n}{}\n", UNIT_NAMES[u]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        match parse_args(args) {
            Ok(Command::Estimate(o)) => render(&o, "thin_metadata_size"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_spec_example_gives_549490688_bytes_in_0_9_and_549494784_in_1_x() {
        assert_eq!(estimate_blocks_v09(1 << 31, 128, 1000) * 4096, 549_490_688);
        assert_eq!(estimate_bytes_v1((1 << 31) / 128, 1000), 549_494_784);
    }

    #[test]
    fn output_matches_recorded_tool_lines() {
        let q = "\"--block-size=64kibibytes --pool-size=1tebibytes --max-thins=1000\"";
        let full =
            |n: &str| format!("thin_metadata_size - {n} estimated metadata area size for {q}\n");
        assert_eq!(line(&["-b", "64k", "-s", "1t", "-m", "1000"]), full("1073224 sectors"));
        assert_eq!(
            line(&["-b", "64k", "-s", "1t", "-m", "1000", "-u", "t"]),
            full("5.00e-04 tebibytes")
        );
        assert_eq!(line(&["-b", "64k", "-s", "1t", "-m", "1000", "-u", "m", "-n"]), "524.04\n");
        assert_eq!(line(&["-b", "64k", "-s", "1t", "-m", "1000", "-u", "z"]), full("0 zebibytes"));
        assert_eq!(line(&["-b", "64k", "-s", "1t", "-m", "10", "-nshort"]), "1065304s\n");
    }

    #[test]
    fn argument_errors_carry_the_tools_messages() {
        let msg = |args: &[&str]| match parse_args(args) {
            Err(Error::Usage { message }) => message,
            other => panic!("expected a usage error, got {other:?}"),
        };
        assert_eq!(msg(&["-b", "64k", "-s", "1t"]), "max thins required!");
        assert_eq!(msg(&["-b", "63k", "-s", "1t", "-m", "1"]), "block size must be 2^^N");
        assert_eq!(msg(&["-b", "64k", "-s", "1x", "-m", "1"]), "Invalid unit specifier!");
        assert_eq!(
            msg(&["-b", "64k", "-s", "64k", "-m", "1"]),
            "pool size must be larger than block size"
        );
        assert_eq!(msg(&["-b", "64k", "-s", "1t", "-m", "1", "-n", "-n"]), "-n already given!");
    }
}
