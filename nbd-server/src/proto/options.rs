//! Parsers for option request data (§4.4.4, §4.4.6). `None` means malformed: the
//! caller answers `NBD_REP_ERR_INVALID` and goes on.

use super::wire::Cursor;
use crate::limits::MAX_STRING_BYTES;

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InfoRequest<'a> {
    pub(crate) name: &'a str,
    pub(crate) info_types: Vec<u16>,
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MetaRequest<'a> {
    pub(crate) name: &'a str,
    pub(crate) queries: Vec<&'a str>,
}

/// A length-prefixed string obeying §1 (UTF-8, no NUL, ≤ 4096 bytes).
fn string<'a>(c: &mut Cursor<'a>, len: u32) -> Option<&'a str> {
    let len = usize::try_from(len).ok()?;
    if len > MAX_STRING_BYTES {
        return None;
    }
    let s = std::str::from_utf8(c.bytes(len)?).ok()?;
    (!s.contains('\0')).then_some(s)
}

/// Well formed only if L = 6 + N + 2k exactly.
pub(crate) fn parse_info_request(data: &[u8]) -> Option<InfoRequest<'_>> {
    let mut c = Cursor::new(data);
    let n = c.u32()?;
    let name = string(&mut c, n)?;
    let k = usize::from(c.u16()?);
    if c.remaining() != 2 * k {
        return None;
    }
    let info_types = (0..k).map(|_| c.u16()).collect::<Option<Vec<_>>>()?;
    Some(InfoRequest { name, info_types })
}

/// Every length must stay inside L, and nothing may trail the last query.
pub(crate) fn parse_meta_request(data: &[u8]) -> Option<MetaRequest<'_>> {
    let mut c = Cursor::new(data);
    let n = c.u32()?;
    let name = string(&mut c, n)?;
    let q = c.u32()?;
    // Each query takes at least 4 bytes, so q is bounded by the data we hold.
    if usize::try_from(q).ok()? > c.remaining() / 4 {
        return None;
    }
    let mut queries = Vec::new();
    for _ in 0..q {
        let len = c.u32()?;
        queries.push(string(&mut c, len)?);
    }
    (c.remaining() == 0).then_some(MetaRequest { name, queries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_bytes(name: &str, types: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(types.len() as u16).to_be_bytes());
        for t in types {
            v.extend_from_slice(&t.to_be_bytes());
        }
        v
    }

    #[test]
    fn info_request_parses_name_and_types() {
        let bytes = info_bytes("disk", &[3, 1]);
        let req = parse_info_request(&bytes);
        assert_eq!(req, Some(InfoRequest { name: "disk", info_types: vec![3, 1] }));
    }

    #[test]
    fn info_request_with_trailing_or_missing_bytes_is_invalid() {
        let mut bytes = info_bytes("disk", &[3]);
        bytes.push(0);
        assert_eq!(parse_info_request(&bytes), None);
        let bytes = info_bytes("disk", &[3]);
        assert_eq!(parse_info_request(&bytes[..bytes.len() - 1]), None);
        assert_eq!(parse_info_request(&[0xff, 0xff, 0xff, 0xff, 0, 0]), None);
    }

    #[test]
    fn meta_request_bounds_are_checked() {
        let mut v = 0u32.to_be_bytes().to_vec();
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&15u32.to_be_bytes());
        v.extend_from_slice(b"base:allocation");
        let req = parse_meta_request(&v);
        assert_eq!(req, Some(MetaRequest { name: "", queries: vec!["base:allocation"] }));
        assert_eq!(parse_meta_request(&v[..v.len() - 1]), None);
        let mut huge_q = 0u32.to_be_bytes().to_vec();
        huge_q.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_meta_request(&huge_q), None);
    }
}
