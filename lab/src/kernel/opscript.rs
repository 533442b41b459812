//! Operation scripts: one workload that thinly and the kernel both run.
//!
//! One operation per line; `#` starts a comment; blank lines are ignored.
//!
//! ```text
//! pool data_blocks=256 block_size=64k thin_size=16m metadata_size=8m   # optional, first
//! create_thin ID
//! create_snap ID ORIGIN
//! write DEV OFFSET LEN PATTERN
//! discard DEV OFFSET LEN
//! delete DEV
//! commit
//! set_transaction_id OLD NEW
//! ```
//!
//! Sizes and offsets are bytes, with an optional suffix: `s` (512-byte sectors), `k`, `m`,
//! `g` (binary), or `b` (data blocks). Offsets and lengths must be multiples of 512 and lie
//! inside the device (every thin device is `thin_size` long, a multiple of 1 MiB and of the
//! block size). PATTERN is `0xNN` (every byte NN), `zero`, or any other word: a seed for
//! pseudo-random bytes that depend on the word and the byte's offset in the device, so that
//! two writes of one word at different places differ.
//!
//! `commit` makes both sides commit their metadata now (thinly: `Pool::commit`; the kernel:
//! a pool message, after which it always commits). It matters after the pool ran out of
//! data space: the kernel then fails provisioning writes until a commit finds free blocks
//! (a flush, a message, or its 1 s timer), while thinly commits on demand; a script that
//! frees blocks in a full pool commits before it writes again, so both sides agree.
//!
//! The parser checks that every operation names devices that exist at that point (ids are
//! dm-thin's 24-bit device ids); an operation may still fail at run time (no space), and
//! the runners record that.

use std::collections::BTreeSet;
use std::fmt;

/// The pool both sides create for a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub nr_data_blocks: u64,
    pub block_size_bytes: u64,
    /// Virtual size of every thin device.
    pub thin_size_bytes: u64,
    pub metadata_size_bytes: u64,
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry {
            nr_data_blocks: 1024,
            block_size_bytes: 64 << 10,
            thin_size_bytes: 16 << 20,
            metadata_size_bytes: 8 << 20,
        }
    }
}

impl Geometry {
    pub fn block_sectors(&self) -> u32 {
        (self.block_size_bytes / 512) as u32
    }

    pub fn thin_blocks(&self) -> u64 {
        self.thin_size_bytes / self.block_size_bytes
    }
}

/// What a write puts into its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Fill(u8),
    Seed(String),
}

impl Pattern {
    /// The bytes of `[offset, offset + len)` of a device (offset a multiple of 8).
    pub fn bytes(&self, offset: u64, len: u64) -> Vec<u8> {
        match self {
            Pattern::Fill(b) => vec![*b; len as usize],
            Pattern::Seed(word) => {
                let seed = fnv1a(word.as_bytes());
                let mut out = Vec::with_capacity(len as usize);
                let mut pos = offset;
                while pos < offset + len {
                    let v = splitmix64(seed ^ (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    out.extend_from_slice(&v.to_le_bytes());
                    pos += 8;
                }
                out.truncate(len as usize);
                out
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Fill(0) => write!(f, "zero"),
            Pattern::Fill(b) => write!(f, "0x{b:02x}"),
            Pattern::Seed(w) => write!(f, "{w}"),
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| (h ^ c as u64).wrapping_mul(0x100_0000_01b3))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateThin {
        id: u64,
    },
    CreateSnap {
        id: u64,
        origin: u64,
    },
    Write {
        dev: u64,
        offset: u64,
        len: u64,
        pattern: Pattern,
    },
    Discard {
        dev: u64,
        offset: u64,
        len: u64,
    },
    Delete {
        dev: u64,
    },
    Commit,
    /// The pool message; refused (a failed operation) when OLD is not the current id.
    SetTransactionId {
        old: u64,
        new: u64,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateThin { id } => write!(f, "create_thin {id}"),
            Op::CreateSnap { id, origin } => write!(f, "create_snap {id} {origin}"),
            Op::Write { dev, offset, len, pattern } => {
                write!(f, "write {dev} {offset} {len} {pattern}")
            }
            Op::Discard { dev, offset, len } => write!(f, "discard {dev} {offset} {len}"),
            Op::Delete { dev } => write!(f, "delete {dev}"),
            Op::Commit => write!(f, "commit"),
            Op::SetTransactionId { old, new } => write!(f, "set_transaction_id {old} {new}"),
        }
    }
}

/// An operation and the script line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub op: Op,
}

/// A parsed script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub geometry: Geometry,
    pub steps: Vec<Step>,
}

/// A script that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}:{line}: {msg}")]
pub struct ParseError {
    pub name: String,
    pub line: usize,
    pub msg: String,
}

/// Largest dm-thin device id (24 bits).
const MAX_DEV_ID: u64 = (1 << 24) - 1;

impl Script {
    /// Parses `text`; `name` labels errors and reports.
    pub fn parse(name: &str, text: &str) -> Result<Script, ParseError> {
        let err = |line: usize, msg: String| ParseError { name: name.to_string(), line, msg };
        let mut geometry = Geometry::default();
        let mut steps = Vec::new();
        let mut live: BTreeSet<u64> = BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let words: Vec<&str> = raw.split('#').next().unwrap_or("").split_whitespace().collect();
            let Some(&cmd) = words.first() else { continue };
            if cmd == "pool" {
                if !steps.is_empty() {
                    return Err(err(line, "`pool` must come before every operation".into()));
                }
                geometry = parse_geometry(&words[1..]).map_err(|m| err(line, m))?;
                continue;
            }
            let op = parse_op(&words, &geometry).map_err(|m| err(line, m))?;
            check_devices(&op, &mut live).map_err(|m| err(line, m))?;
            steps.push(Step { line, op });
        }
        Ok(Script { name: name.to_string(), geometry, steps })
    }

    /// The devices that exist after the whole script, if every operation succeeds.
    pub fn final_devices(&self) -> Vec<u64> {
        let mut live = BTreeSet::new();
        for s in &self.steps {
            let _ = check_devices(&s.op, &mut live);
        }
        live.into_iter().collect()
    }
}

fn check_devices(op: &Op, live: &mut BTreeSet<u64>) -> Result<(), String> {
    let need = |d: &u64, live: &BTreeSet<u64>| {
        if live.contains(d) {
            Ok(())
        } else {
            Err(format!("device {d} does not exist here"))
        }
    };
    match op {
        Op::CreateThin { id } | Op::CreateSnap { id, .. } if live.contains(id) => {
            return Err(format!("device {id} exists already"));
        }
        Op::CreateThin { id } | Op::CreateSnap { id, .. } if *id > MAX_DEV_ID => {
            return Err(format!("device id {id} is larger than {MAX_DEV_ID}"));
        }
        Op::CreateThin { id } => {
            live.insert(*id);
        }
        Op::CreateSnap { id, origin } => {
            need(origin, live)?;
            live.insert(*id);
        }
        Op::Write { dev, .. } | Op::Discard { dev, .. } => need(dev, live)?,
        Op::Delete { dev } => {
            need(dev, live)?;
            live.remove(dev);
        }
        Op::Commit | Op::SetTransactionId { .. } => {}
    }
    Ok(())
}

fn parse_geometry(words: &[&str]) -> Result<Geometry, String> {
    let mut g = Geometry::default();
    let mut blocks = None;
    for w in words {
        let (k, v) =
            w.split_once('=').ok_or_else(|| format!("`pool` takes KEY=VALUE, not {w:?}"))?;
        match k {
            "block_size" => g.block_size_bytes = parse_size(v, None)?,
            "data_blocks" => blocks = Some(parse_size(v, None)?),
            "thin_size" => g.thin_size_bytes = parse_size(v, None)?,
            "metadata_size" => g.metadata_size_bytes = parse_size(v, None)?,
            _ => return Err(format!("unknown pool setting {k:?}")),
        }
    }
    g.nr_data_blocks = blocks.unwrap_or(g.nr_data_blocks);
    let bs = g.block_size_bytes;
    if !bs.is_multiple_of(64 << 10) || !(64 << 10..=1 << 30).contains(&bs) {
        return Err(format!("block_size {bs}: a multiple of 64 KiB from 64 KiB to 1 GiB"));
    }
    let t = g.thin_size_bytes;
    if t == 0 || !t.is_multiple_of(1 << 20) || !t.is_multiple_of(bs) {
        return Err(format!("thin_size {t}: a positive multiple of 1 MiB and of the block size"));
    }
    if g.nr_data_blocks == 0 || !g.metadata_size_bytes.is_multiple_of(4096) {
        return Err("data_blocks must be positive, metadata_size a multiple of 4 KiB".into());
    }
    Ok(g)
}

/// A size: digits with an optional suffix s, k, m, g, or b (data blocks of `block`).
pub fn parse_size(s: &str, block: Option<u64>) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                's' => 512,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                'b' => block.ok_or_else(|| format!("{s:?}: `b` (blocks) is not allowed here"))?,
                _ => return Err(format!("{s:?}: unknown suffix {c:?}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_op(words: &[&str], g: &Geometry) -> Result<Op, String> {
    let n = |i: usize| -> Result<u64, String> {
        let w = words.get(i).ok_or_else(|| format!("{}: missing argument {i}", words[0]))?;
        w.parse().map_err(|_| format!("{w:?} is not a number"))
    };
    let size = |i: usize| -> Result<u64, String> {
        let w = words.get(i).ok_or_else(|| format!("{}: missing argument {i}", words[0]))?;
        parse_size(w, Some(g.block_size_bytes))
    };
    let argc = |k: usize| {
        if words.len() != k + 1 {
            Err(format!("{} takes {k} arguments", words[0]))
        } else {
            Ok(())
        }
    };
    let range = |off: u64, len: u64| -> Result<(), String> {
        if !off.is_multiple_of(512) || !len.is_multiple_of(512) || len == 0 {
            return Err(format!("offset {off} and length {len}: positive multiples of 512"));
        }
        if off.checked_add(len).is_none_or(|e| e > g.thin_size_bytes) {
            return Err(format!("{off}+{len} is past the device's end ({})", g.thin_size_bytes));
        }
        Ok(())
    };
    Ok(match words[0] {
        "create_thin" => {
            argc(1)?;
            Op::CreateThin { id: n(1)? }
        }
        "create_snap" => {
            argc(2)?;
            Op::CreateSnap { id: n(1)?, origin: n(2)? }
        }
        "write" => {
            argc(4)?;
            let (offset, len) = (size(2)?, size(3)?);
            range(offset, len)?;
            let w = words[4];
            let pattern = if w == "zero" {
                Pattern::Fill(0)
            } else if let Some(h) = w.strip_prefix("0x") {
                Pattern::Fill(u8::from_str_radix(h, 16).map_err(|_| format!("bad byte {w:?}"))?)
            } else {
                Pattern::Seed(w.to_string())
            };
            Op::Write { dev: n(1)?, offset, len, pattern }
        }
        "discard" => {
            argc(3)?;
            let (offset, len) = (size(2)?, size(3)?);
            range(offset, len)?;
            Op::Discard { dev: n(1)?, offset, len }
        }
        "delete" => {
            argc(1)?;
            Op::Delete { dev: n(1)? }
        }
        "commit" => {
            argc(0)?;
            Op::Commit
        }
        "set_transaction_id" => {
            argc(2)?;
            Op::SetTransactionId { old: n(1)?, new: n(2)? }
        }
        other => return Err(format!("unknown operation {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_with_comments_sizes_and_patterns() {
        let s = Script::parse(
            "t",
            "# c\npool data_blocks=64 thin_size=4m\ncreate_thin 0\n\
             write 0 1b 64k 0xab  # x\ncreate_snap 1 0\ndiscard 1 0 2b\ndelete 0\n",
        )
        .unwrap();
        assert_eq!(s.geometry.nr_data_blocks, 64);
        assert_eq!(s.steps.len(), 5);
        assert_eq!(
            s.steps[1].op,
            Op::Write { dev: 0, offset: 65536, len: 65536, pattern: Pattern::Fill(0xab) }
        );
        assert_eq!(s.final_devices(), vec![1]);
    }

    #[test]
    fn scripts_refuse_unknown_devices_and_bad_ranges() {
        assert!(Script::parse("t", "write 0 0 512 a").is_err());
        assert!(Script::parse("t", "create_thin 0\nwrite 0 100 512 a").is_err());
        assert!(Script::parse("t", "create_thin 0\nwrite 0 16m 512 a").is_err());
        assert!(Script::parse("t", "create_thin 0\ncreate_thin 0").is_err());
        assert!(Script::parse("t", "create_thin 0\ndelete 0\ndiscard 0 0 1b").is_err());
    }

    #[test]
    fn set_transaction_id_parses_and_prints_as_the_pool_message() {
        let s = Script::parse("t", "create_thin 0\nset_transaction_id 0 7\n").unwrap();
        assert_eq!(s.steps[1].op, Op::SetTransactionId { old: 0, new: 7 });
        assert_eq!(s.steps[1].op.to_string(), "set_transaction_id 0 7");
        assert!(Script::parse("t", "set_transaction_id 0").is_err());
        assert!(Script::parse("t", "set_transaction_id x 1").is_err());
    }

    #[test]
    fn seeded_patterns_depend_on_word_and_offset() {
        let p = Pattern::Seed("a".into());
        assert_eq!(p.bytes(512, 512), p.bytes(0, 1024)[512..].to_vec());
        assert_ne!(p.bytes(0, 512), p.bytes(512, 512));
        assert_ne!(p.bytes(0, 512), Pattern::Seed("b".into()).bytes(0, 512));
    }
}
