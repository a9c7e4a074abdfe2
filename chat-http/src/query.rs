//! Query strings and path segments.
//!
//! A query is `application/x-www-form-urlencoded`, as every browser (`URLSearchParams`) and HTTP
//! library writes it: `+` is a space, `%2B` is a `+`, `%XX` is a byte. So the phone
//! `+1 415 555 0100` arrives as `%2B1+415+555+0100`, and a `+` written unencoded is a space.
//! The decoding itself is `form_urlencoded`'s; it is lenient (a bad escape passes through as
//! text, bytes that are not UTF-8 become U+FFFD), so [`validate`] first refuses what the
//! contract calls a bad query: a `%` not followed by two hex digits, or an escape that decodes
//! to bytes that are not UTF-8.
//!
//! A path segment (`/chatroom/{id}`) is percent-encoded only: a `+` there stays a `+`.

use std::borrow::Cow;

use chat_core::{Error, Result};
use percent_encoding::percent_decode_str;

fn bad_query() -> Error {
    Error::bad_request("the query string is not valid percent-encoded UTF-8")
}

/// Checks that the whole raw query decodes: every `%` starts a two-hex-digit escape and every
/// key and value decodes to UTF-8. Run before [`param`].
pub(crate) fn validate(raw_query: Option<&str>) -> Result<()> {
    let Some(raw) = raw_query else {
        return Ok(());
    };
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).ok_or_else(bad_query)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad_query());
        }
    }
    // `+` decodes to a space, an ASCII byte: it cannot change whether a part is UTF-8.
    for part in raw.split(['&', '=']) {
        percent_decode_str(part)
            .decode_utf8()
            .map_err(|_| bad_query())?;
    }
    Ok(())
}

/// The first value of `name` in a raw query, form-decoded; `None` when it is not there. The
/// query must have passed [`validate`] (otherwise a bad escape reads as text).
pub(crate) fn param(raw_query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(raw_query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Like [`param`], an empty value read as none: for the parameters the contract says so of
/// (`cursor=`, `after=`).
pub(crate) fn param_or_none(raw_query: Option<&str>, name: &str) -> Option<String> {
    param(raw_query, name).filter(|v| !v.is_empty())
}

/// A validated query's parameter, for callers that answer a bad query with something else
/// than 400 (a page's 404, a WebSocket's 401): `None` when the query does not decode.
pub(crate) fn lenient_param(raw_query: Option<&str>, name: &str) -> Option<String> {
    validate(raw_query).ok()?;
    param(raw_query, name)
}

/// Percent-decodes a path segment into UTF-8 (`+` stays `+`); `None` when it is not UTF-8.
pub(crate) fn decode_segment(s: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(s).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str, name: &str) -> Option<String> {
        assert!(validate(Some(q)).is_ok(), "{q} should validate");
        param(Some(q), name)
    }

    #[test]
    fn reads_form_encoding() {
        // What httpx, requests, Go's url.Values and URLSearchParams send for "+1 (555) 721-0199".
        assert_eq!(
            p("phone=%2B1+%28555%29+721-0199", "phone").as_deref(),
            Some("+1 (555) 721-0199")
        );
        // An unencoded `+` is a space.
        assert_eq!(
            p("phone=+14155550100", "phone").as_deref(),
            Some(" 14155550100")
        );
        assert_eq!(p("a=%20%2b", "a").as_deref(), Some(" +"));
        assert_eq!(p("na%6De=x", "name").as_deref(), Some("x"));
        assert_eq!(p("k=%C3%A9", "k").as_deref(), Some("é"));
    }

    #[test]
    fn first_value_wins_and_absent_is_none() {
        let q = "limit=5&limit=9&flag&cursor=";
        assert_eq!(p(q, "limit").as_deref(), Some("5"));
        assert_eq!(p(q, "flag").as_deref(), Some(""));
        assert_eq!(p(q, "cursor").as_deref(), Some(""));
        assert_eq!(param_or_none(Some(q), "cursor"), None);
        assert_eq!(param(Some(q), "after"), None);
        assert_eq!(param(None, "after"), None);
    }

    #[test]
    fn refuses_bad_escapes_and_non_utf8() {
        for q in [
            "a=%zz",
            "a=%4",
            "a=%",
            "a=1&b=%4g",
            "%ff=1",
            "a=%ff",
            "a=%C3",
        ] {
            assert!(validate(Some(q)).is_err(), "{q} should be refused");
            assert_eq!(lenient_param(Some(q), "a"), None, "{q}");
        }
        assert!(validate(Some("a=%41&b=%e2%82%ac")).is_ok());
        assert!(validate(None).is_ok());
        assert!(validate(Some("")).is_ok());
    }

    #[test]
    fn path_segments_keep_plus() {
        assert_eq!(decode_segment("a+b%20c").as_deref(), Some("a+b c"));
        assert_eq!(decode_segment("%ff"), None);
    }
}

#[cfg(test)]
#[path = "query_props.rs"]
mod props;
