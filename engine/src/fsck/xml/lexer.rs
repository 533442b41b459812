//! A small streaming XML tokenizer for the dump format: start tags (with attributes),
//! end tags and end of input. Comments, processing instructions (`<?xml …?>`), CDATA
//! and character data are skipped; a DOCTYPE is skipped unless it has an internal subset
//! (entity definitions are refused, so expansion can never blow up memory).
//!
//! Memory is bounded: one input buffer, and one tag's name and attributes, each capped by
//! the `MAX_*` constants below. Lines are counted for error messages.

use std::io::{ErrorKind, Read};
use std::ops::Range;

use crate::fsck::error::{Error, Result};

/// Bytes read from the input at a time.
const INPUT_BUFFER_BYTES: usize = 64 * 1024;
/// Longest element or attribute name; the format's longest is 14 bytes.
const MAX_NAME_BYTES: usize = 64;
/// Longest attribute value after entity decoding; numbers are ≤ 20 digits, names short.
const MAX_VALUE_BYTES: usize = 4096;
/// Most attributes on one element; the format's most is 8.
const MAX_ATTRIBUTES: usize = 32;

/// What [`Lexer::next_token`] found. The tag's name and attributes are read from the lexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// `<name a="v">` or, with `empty`, `<name a="v"/>`.
    Start { empty: bool },
    /// `</name>`
    End,
    /// The input is exhausted (outside any markup).
    Eof,
}

pub(crate) struct Lexer<R> {
    input: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    line: u64,
    tag_line: u64,
    at_start: bool,
    name: Vec<u8>,
    scratch: Vec<u8>,
    attrs: Vec<(Range<usize>, Range<usize>)>,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80
}

fn is_name_byte(b: u8) -> bool {
    is_name_start(b) || b.is_ascii_digit() || b == b'-' || b == b'.'
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl<R: Read> Lexer<R> {
    pub(crate) fn new(input: R) -> Self {
        Lexer {
            input,
            buf: vec![0; INPUT_BUFFER_BYTES].into_boxed_slice(),
            pos: 0,
            len: 0,
            line: 1,
            tag_line: 1,
            at_start: true,
            name: Vec::with_capacity(MAX_NAME_BYTES),
            scratch: Vec::with_capacity(256),
            attrs: Vec::with_capacity(8),
        }
    }

    /// Line of the `<` that opened the last tag returned.
    pub(crate) fn tag_line(&self) -> u64 {
        self.tag_line
    }

    /// Line the lexer has reached.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Name of the last tag returned.
    pub(crate) fn name(&self) -> &[u8] {
        &self.name
    }

    /// Attributes of the last start tag returned, values entity-decoded.
    pub(crate) fn attrs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.attrs.iter().map(|(k, v)| (&self.scratch[k.clone()], &self.scratch[v.clone()]))
    }

    fn syntax<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(Error::Syntax { line: self.line, reason: reason.into() })
    }

    fn peek(&mut self) -> Result<Option<u8>> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = loop {
                match self.input.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("reading XML input")(e)),
                }
            };
            if self.len == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[self.pos]))
    }

    fn bump(&mut self) -> Result<Option<u8>> {
        let b = self.peek()?;
        if let Some(b) = b {
            self.pos += 1;
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(b)
    }

    /// Next byte inside markup, where end of input is an error.
    fn must(&mut self, inside: &str) -> Result<u8> {
        match self.bump()? {
            Some(b) => Ok(b),
            None => self.syntax(format!("input ends inside {inside}")),
        }
    }

    fn skip_space(&mut self) -> Result<bool> {
        let mut skipped = false;
        while let Some(b) = self.peek()? {
            if !is_space(b) {
                break;
            }
            self.bump()?;
            skipped = true;
        }
        Ok(skipped)
    }

    /// Skips up to and including `end` (2 or 3 bytes).
    fn skip_past(&mut self, end: &[u8], inside: &str) -> Result<()> {
        let mut window = [0u8; 3];
        loop {
            let b = self.must(inside)?;
            window = [window[1], window[2], b];
            if window.ends_with(end) {
                return Ok(());
            }
        }
    }

    fn expect(&mut self, want: u8, inside: &str) -> Result<()> {
        let b = self.must(inside)?;
        if b != want {
            return self.syntax(format!(
                "expected '{}' in {inside}, found '{}'",
                want as char,
                b.escape_ascii()
            ));
        }
        Ok(())
    }

    /// Returns the next start tag, end tag or end of input.
    pub(crate) fn next_token(&mut self) -> Result<Token> {
        if self.at_start {
            self.at_start = false;
            self.skip_bom()?;
        }
        loop {
            // Character data is not part of the format; skip it.
            loop {
                match self.bump()? {
                    None => return Ok(Token::Eof),
                    Some(b'<') => break,
                    Some(_) => {}
                }
            }
            self.tag_line = self.line;
            match self.must("a tag")? {
                b'?' => self.skip_past(b"?>", "a processing instruction")?,
                b'!' => self.bang()?,
                b'/' => {
                    let first = self.must("an end tag")?;
                    self.read_name(first, true)?;
                    self.skip_space()?;
                    self.expect(b'>', "an end tag")?;
                    return Ok(Token::End);
                }
                b => {
                    self.read_name(b, true)?;
                    return self.read_attributes();
                }
            }
        }
    }

    fn skip_bom(&mut self) -> Result<()> {
        if self.peek()? == Some(0xEF) {
            for want in [0xEF, 0xBB, 0xBF] {
                if self.bump()? != Some(want) {
                    return self.syntax("bad byte-order mark");
                }
            }
        }
        Ok(())
    }

    /// `<!--…-->`, `<![CDATA[…]]>` or `<!DOCTYPE …>` (without internal subset).
    fn bang(&mut self) -> Result<()> {
        match self.must("markup")? {
            b'-' => {
                self.expect(b'-', "a comment")?;
                self.skip_past(b"-->", "a comment")
            }
            b'[' => {
                for &want in b"CDATA[" {
                    self.expect(want, "a CDATA section")?;
                }
                self.skip_past(b"]]>", "a CDATA section")
            }
            b'D' => {
                for &want in b"OCTYPE" {
                    self.expect(want, "a DOCTYPE")?;
                }
                loop {
                    match self.must("a DOCTYPE")? {
                        b'>' => return Ok(()),
                        b'[' => return self.syntax("DOCTYPE internal subsets are not accepted"),
                        _ => {}
                    }
                }
            }
            b => self.syntax(format!("unknown markup '<!{}'", b.escape_ascii())),
        }
    }

    fn read_name(&mut self, first: u8, element: bool) -> Result<()> {
        if !is_name_start(first) {
            return self.syntax(format!("'{}' cannot start a name", first.escape_ascii()));
        }
        if element {
            self.name.clear();
        }
        let target = if element { &mut self.name } else { &mut self.scratch };
        let start = target.len();
        target.push(first);
        while let Some(b) = self.peek()? {
            if !is_name_byte(b) {
                break;
            }
            self.bump()?;
            let target = if element { &mut self.name } else { &mut self.scratch };
            if target.len() - start >= MAX_NAME_BYTES {
                return Err(Error::Limit {
                    line: self.line,
                    what: "a name's length in bytes",
                    limit: MAX_NAME_BYTES as u64,
                });
            }
            target.push(b);
        }
        Ok(())
    }

    fn read_attributes(&mut self) -> Result<Token> {
        self.scratch.clear();
        self.attrs.clear();
        loop {
            let spaced = self.skip_space()?;
            match self.must("a start tag")? {
                b'>' => return Ok(Token::Start { empty: false }),
                b'/' => {
                    self.expect(b'>', "an empty-element tag")?;
                    return Ok(Token::Start { empty: true });
                }
                b if spaced => self.read_attribute(b)?,
                b => {
                    return self.syntax(format!(
                        "expected space, '>' or '/>' in a start tag, found '{}'",
                        b.escape_ascii()
                    ))
                }
            }
        }
    }

    fn read_attribute(&mut self, first: u8) -> Result<()> {
        if self.attrs.len() == MAX_ATTRIBUTES {
            return Err(Error::Limit {
                line: self.line,
                what: "the number of attributes on one element",
                limit: MAX_ATTRIBUTES as u64,
            });
        }
        let key_start = self.scratch.len();
        self.read_name(first, false)?;
        let key = key_start..self.scratch.len();
        self.skip_space()?;
        self.expect(b'=', "an attribute")?;
        self.skip_space()?;
        let quote = self.must("an attribute")?;
        if quote != b'"' && quote != b'\'' {
            return self.syntax("attribute values must be quoted");
        }
        let value_start = self.scratch.len();
        loop {
            let b = self.must("an attribute value")?;
            match b {
                _ if b == quote => break,
                b'<' => return self.syntax("'<' inside an attribute value"),
                b'&' => self.read_entity()?,
                _ => self.scratch.push(b),
            }
            if self.scratch.len() - value_start > MAX_VALUE_BYTES {
                return Err(Error::Limit {
                    line: self.line,
                    what: "an attribute value's length in bytes",
                    limit: MAX_VALUE_BYTES as u64,
                });
            }
        }
        self.attrs.push((key, value_start..self.scratch.len()));
        Ok(())
    }

    /// Decodes `&name;` or `&#N;` / `&#xN;` (the `&` already read) into `scratch`.
    fn read_entity(&mut self) -> Result<()> {
        let mut entity = [0u8; 12];
        let mut n = 0;
        loop {
            let b = self.must("an entity reference")?;
            if b == b';' {
                break;
            }
            if n == entity.len() {
                return self.syntax("entity reference too long");
            }
            entity[n] = b;
            n += 1;
        }
        let ch = match &entity[..n] {
            b"lt" => '<',
            b"gt" => '>',
            b"amp" => '&',
            b"quot" => '"',
            b"apos" => '\'',
            [b'#', b'x', hex @ ..] => self.char_ref(hex, 16)?,
            [b'#', dec @ ..] => self.char_ref(dec, 10)?,
            other => {
                return self.syntax(format!("unknown entity '&{};'", other.escape_ascii()));
            }
        };
        let mut utf8 = [0u8; 4];
        self.scratch.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
        Ok(())
    }

    fn char_ref(&self, digits: &[u8], radix: u32) -> Result<char> {
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| u32::from_str_radix(s, radix).ok())
            .and_then(char::from_u32)
            .filter(|&c| c != '\0')
            .map_or_else(|| self.syntax("bad character reference"), Ok)
    }
}
