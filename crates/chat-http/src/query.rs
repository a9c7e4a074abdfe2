//! Query strings and percent-decoding.
//!
//! A `+` stays a `+` (RFC 3986 query semantics, not HTML-form semantics): phones start with
//! one, and no value of this API legitimately holds a space. `%20` is a space.

use chat_core::{Error, Result};

/// The first value of `name` in a raw query, decoded. `Err(bad_request)` when the query does
/// not decode (bad `%` escape, not UTF-8).
pub(crate) fn param(raw_query: Option<&str>, name: &str) -> Result<Option<String>> {
    let Some(raw) = raw_query else {
        return Ok(None);
    };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k)? == name {
            return decode(v).map(Some);
        }
    }
    Ok(None)
}

/// Checks that every key and value of a raw query decodes.
pub(crate) fn validate(raw_query: Option<&str>) -> Result<()> {
    for pair in raw_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decode(k)?;
        decode(v)?;
    }
    Ok(())
}

/// Percent-decodes `s` into UTF-8.
pub(crate) fn decode(s: &str) -> Result<String> {
    let bad = || Error::bad_request("the query string is not valid percent-encoded UTF-8");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hi = hex_val(hex[0]).ok_or_else(bad)?;
            let lo = hex_val(hex[1]).ok_or_else(bad)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that unwraps fails loudly, as it should
mod tests {
    use super::*;

    #[test]
    fn decodes_params() {
        let q = Some("phone=+1415%20555&limit=5&limit=9&flag");
        assert_eq!(param(q, "phone").unwrap().as_deref(), Some("+1415 555"));
        assert_eq!(param(q, "limit").unwrap().as_deref(), Some("5"));
        assert_eq!(param(q, "flag").unwrap().as_deref(), Some(""));
        assert_eq!(param(q, "cursor").unwrap(), None);
        assert_eq!(param(None, "cursor").unwrap(), None);
        assert!(param(Some("a=%zz"), "a").is_err());
        assert!(param(Some("a=%ff"), "a").is_err());
        assert!(validate(Some("a=1&b=%4")).is_err());
        assert!(validate(Some("a=1&b=%41")).is_ok());
    }
}
