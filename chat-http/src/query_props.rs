//! Property tests of the query and path decoding (a child module of `query`), each against an
//! independent decoder written here from the contract's words: `validate` refuses exactly the
//! queries with a bad `%` escape or a part that is not UTF-8; on the others `param` reads the
//! first value of a name as a browser's `URLSearchParams` wrote it; `decode_segment` is plain
//! percent-decoding. And routing, which uses them, never panics.
//!
//! Cases: a few thousand per property; `PROPTEST_CASES=100000 cargo test -p chat-http --lib
//! props` runs more.

use hyper::Method;
use proptest::prelude::*;

use proptest::test_runner::Config as ProptestConfig;

use super::*;
use crate::router::{Matched, Route, route};

/// `cases` cases, unless `PROPTEST_CASES` is set: proptest's default config reads that
/// variable, and an explicit `cases` would override it, so it is set only without it.
fn ci_config(cases: u32) -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig {
            cases,
            ..ProptestConfig::default()
        }
    }
}

/// Percent-decodes `s`, with `+` a space when `form`. A `%` without two hex digits is `None`
/// when `strict`, else kept as text (as percent-decoding a path segment does).
fn unescape(s: &str, form: bool, strict: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex) {
            (b'%', Some(hex)) => {
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            (b'%', None) if strict => return None,
            (b'+', _) if form => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The query's `(name, value)` pairs, or `None` when it is a bad query (400).
fn pairs(raw: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in raw.split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = String::from_utf8(unescape(k, true, true)?).ok()?;
        let v = String::from_utf8(unescape(v, true, true)?).ok()?;
        out.push((k, v));
    }
    Some(out)
}

/// A value's escapes: `%` followed by anything, sometimes hex.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "([a-z]{0,3}(=[a-zA-Z0-9+ éx]{0,4})?(%[0-9a-fA-FgG]{0,2}){0,2}&?){0,5}",
        1 => any::<String>(),
        1 => "[%+=&a-f0-9]{0,16}",
    ]
}

fn names() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{0,3}", any::<String>()]
}

/// `s` percent-encoded as a browser might: unreserved bytes as they are, a space as `+` or
/// `%20`, anything else `%XX` in either case, and sometimes an unreserved byte escaped too.
fn form_encode(s: &str, seed: u64, out: &mut String) {
    for (i, b) in s.bytes().enumerate() {
        let roll = seed.rotate_left(i as u32 % 64) % 5;
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' if roll != 0 => {
                out.push(char::from(b));
            }
            b' ' if roll.is_multiple_of(2) => out.push('+'),
            _ if roll.is_multiple_of(2) => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
}

proptest! {
    #![proptest_config(ci_config(3000))]

    /// Any query: refused exactly when the contract says; otherwise every name reads its
    /// first value, and an empty `cursor=` / `after=` reads as none.
    #[test]
    fn queries_decode_as_form_encoding_says(raw in query(), name in names()) {
        let expected = pairs(&raw);
        prop_assert_eq!(validate(Some(&raw)).is_ok(), expected.is_some(), "{:?}", raw);
        prop_assert_eq!(lenient_param(Some(&raw), &name).is_some(),
            expected.as_ref().is_some_and(|p| p.iter().any(|(k, _)| *k == name)));
        if let Some(pairs) = expected {
            let first = pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
            prop_assert_eq!(param(Some(&raw), &name), first.clone(), "{:?} {:?}", raw, name);
            prop_assert_eq!(lenient_param(Some(&raw), &name), first.clone());
            prop_assert_eq!(param_or_none(Some(&raw), &name), first.filter(|v| !v.is_empty()));
            for (k, _) in &pairs {
                prop_assert!(param(Some(&raw), k).is_some());
            }
        }
        prop_assert!(validate(None).is_ok());
        prop_assert_eq!(param(None, &name), None);
    }

    /// Whatever names and values a client encodes, as `URLSearchParams` or by hand, the
    /// server reads back.
    #[test]
    fn encoded_queries_round_trip(
        sent in prop::collection::vec((names(), any::<String>()), 0..5),
        seed in any::<u64>(),
        by_hand in any::<bool>(),
    ) {
        let raw = if by_hand {
            let mut raw = String::new();
            for (i, (k, v)) in sent.iter().enumerate() {
                if i > 0 {
                    raw.push('&');
                }
                form_encode(k, seed, &mut raw);
                raw.push('=');
                form_encode(v, seed.rotate_left(7), &mut raw);
            }
            raw
        } else {
            form_urlencoded::Serializer::new(String::new()).extend_pairs(&sent).finish()
        };
        prop_assert!(validate(Some(&raw)).is_ok(), "{:?}", raw);
        for (k, _) in &sent {
            let first = sent.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.clone());
            prop_assert_eq!(param(Some(&raw), k), first, "{:?}", raw);
        }
    }

    /// A path segment is percent-decoded, `+` kept; not UTF-8 is `None`; any string encoded
    /// comes back.
    #[test]
    fn path_segments(
        raw in "([a-zA-Z0-9+ é/-]|%[0-9a-fA-FgG]{0,2}){0,12}",
        s in any::<String>(),
        seed in any::<u64>(),
    ) {
        let expected = unescape(&raw, false, false).and_then(|b| String::from_utf8(b).ok());
        prop_assert_eq!(decode_segment(&raw).map(Cow::into_owned), expected, "{:?}", raw);
        let mut encoded = String::new();
        form_encode(&s, seed, &mut encoded);
        let encoded = encoded.replace('+', "%20");
        prop_assert_eq!(decode_segment(&encoded).map(|c| c.into_owned()), Some(s));
        prop_assert_eq!(decode_segment("a+b").map(Cow::into_owned), Some("a+b".to_owned()));
    }

    /// Routing any method, path and query: a route, a 405 or a 404, never a panic; the ids it
    /// takes from a path are decoded, never empty.
    #[test]
    fn routing_never_panics(
        method in prop::sample::select(vec![
            Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE,
            Method::PATCH, Method::OPTIONS,
        ]),
        path in prop_oneof![
            any::<String>(),
            "/(chatroom|chatrooms|static|ws)?/?[a-zA-Z0-9%+./-]{0,12}(/messages)?/?",
        ],
        raw_query in prop::option::of(query()),
        id in any::<String>(),
        seed in any::<u64>(),
    ) {
        match route(&method, &path, raw_query.as_deref()) {
            Matched::Found(Route::Chatroom(Some(id)) | Route::Messages(id)) if id.is_empty() => {
                prop_assert!(path.starts_with("/chatrooms/"), "empty id from {:?}", path);
            }
            _ => {}
        }
        let mut seg = String::new();
        form_encode(&id, seed, &mut seg);
        let seg = seg.replace('+', "%20");
        let got = route(&Method::GET, &format!("/chatrooms/{seg}/messages"), None);
        if seg.is_empty() {
            prop_assert_eq!(got, Matched::NotFound);
        } else {
            prop_assert_eq!(got, Matched::Found(Route::Messages(id.clone())));
        }
        let got = route(&Method::GET, &format!("/chatroom/{seg}"), None);
        // The encoding leaves no `/` in the segment, so any id comes back.
        if id.is_empty() {
            prop_assert_eq!(got, Matched::Found(Route::Chatroom(None)));
        } else {
            prop_assert_eq!(got, Matched::Found(Route::Chatroom(Some(id))));
        }
    }
}
