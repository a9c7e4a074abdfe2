//! Property tests of the REST body decoding (a child module of `api`, so it reaches the body
//! structs and `parse`): any bytes get a body or `bad_request`, never a panic; on JSON, the
//! decoded fields are what a plain `serde_json::Value` reading of the body says (required
//! fields strings, optional ones absent, null or strings, extra fields ignored, anything else
//! `bad_request`). And the `Authorization` header reading.
//!
//! Cases: a few thousand per property; `PROPTEST_CASES=100000 cargo test -p chat-http --lib
//! props` runs more.

use hyper::header::HeaderValue;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Number};

use super::*;

/// `cases` cases, unless `PROPTEST_CASES` is set: proptest's default config reads that
/// variable, and an explicit `cases` would override it, so it is set only without it.
pub(crate) fn ci_config(cases: u32) -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig {
            cases,
            ..ProptestConfig::default()
        }
    }
}

/// Strings with what JSON escapes and what it need not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9+() -]{0,16}",
        1 => "[\"\\\\/\u{0}-\u{1f}\u{7f}\u{2028}é😀]{0,6}",
        1 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_0-9]{0,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 6] = ["phone", "name", "phone1", "phone2", "action", "chat_id"];

/// A body near the routes' shapes: each field of any route present most of the time, mostly
/// a string, sometimes null or another type, plus extra fields; sometimes not an object.
fn body_value() -> impl Strategy<Value = Value> {
    let field = || {
        prop::option::weighted(
            0.75,
            prop_oneof![
                6 => text().prop_map(Value::String),
                1 => Just(Value::Null),
                2 => json_value(),
            ],
        )
    };
    let object = (
        [field(), field(), field(), field(), field(), field()],
        prop::collection::btree_map("[a-z_0-9]{0,8}", json_value(), 0..3),
    )
        .prop_map(|(values, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in FIELDS.iter().zip(values) {
                match v {
                    Some(v) => m.insert((*k).to_owned(), v),
                    None => m.remove(*k),
                };
            }
            Value::Object(m)
        });
    prop_oneof![9 => object, 1 => json_value()]
}

/// Bytes that are sometimes JSON, sometimes almost, sometimes not text at all.
fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        any::<String>().prop_map(String::into_bytes),
        "[{}\\[\\]\":,0-9a-z_\\\\ .eE+-]{0,40}".prop_map(String::into_bytes),
        (body_value(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, b)| {
            // A JSON body with one byte changed.
            let mut bytes = v.to_string().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = b;
            bytes
        }),
    ]
}

fn required(d: &Map<String, Value>, k: &str) -> Option<String> {
    d.get(k)?.as_str().map(str::to_owned)
}

fn optional(d: &Map<String, Value>, k: &str) -> Option<Option<String>> {
    match d.get(k) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// Every route's body read from `bytes`, as `(route, fields)` where `fields` is `Err(code)`
/// or the decoded fields in declaration order (`None` for an optional field left out).
type Decoded = Vec<(&'static str, Result<Vec<Option<String>>, &'static str>)>;

fn decode_all(bytes: &[u8]) -> Decoded {
    fn code<T>(r: &Result<T>) -> &'static str {
        r.as_ref().err().map_or("", Error::code)
    }
    let mut out: Decoded = Vec::new();
    let r = parse::<RegisterBody>(bytes);
    out.push((
        "register_user",
        r.as_ref()
            .map(|b| vec![Some(b.phone.clone()), b.name.clone()])
            .map_err(|_| code(&r)),
    ));
    let r = parse::<SendRequestBody>(bytes);
    out.push((
        "send_request",
        r.as_ref()
            .map(|b| vec![b.phone1.clone(), Some(b.phone2.clone())])
            .map_err(|_| code(&r)),
    ));
    let r = parse::<RespondBody>(bytes);
    out.push((
        "respond_request",
        r.as_ref()
            .map(|b| {
                vec![
                    Some(b.phone1.clone()),
                    b.phone2.clone(),
                    Some(b.action.clone()),
                ]
            })
            .map_err(|_| code(&r)),
    ));
    let r = parse::<CancelBody>(bytes);
    out.push((
        "cancel_request",
        r.as_ref()
            .map(|b| vec![Some(b.phone2.clone())])
            .map_err(|_| code(&r)),
    ));
    let r = parse::<CloseRoomBody>(bytes);
    out.push((
        "close_room",
        r.as_ref()
            .map(|b| vec![Some(b.chat_id.clone())])
            .map_err(|_| code(&r)),
    ));
    out
}

/// What the contract says of each route's body, from a plain `serde_json::Value` reading.
fn oracle(bytes: &[u8]) -> Decoded {
    let body = serde_json::from_slice::<Value>(bytes).ok();
    let fields = |shape: &[(&str, bool)]| -> Result<Vec<Option<String>>, &'static str> {
        let Some(Value::Object(d)) = &body else {
            return Err("bad_request");
        };
        shape
            .iter()
            .map(|(k, needed)| {
                if *needed {
                    required(d, k).map(Some)
                } else {
                    optional(d, k)
                }
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("bad_request")
    };
    vec![
        ("register_user", fields(&[("phone", true), ("name", false)])),
        (
            "send_request",
            fields(&[("phone1", false), ("phone2", true)]),
        ),
        (
            "respond_request",
            fields(&[("phone1", true), ("phone2", false), ("action", true)]),
        ),
        ("cancel_request", fields(&[("phone2", true)])),
        ("close_room", fields(&[("chat_id", true)])),
    ]
}

proptest! {
    #![proptest_config(ci_config(3000))]

    /// Any bytes: each route's body decodes or is `bad_request`, as serde_json reads them.
    #[test]
    fn any_body_is_decoded_or_bad_request(bytes in any_bytes()) {
        let text = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(decode_all(&bytes), oracle(&bytes), "{:?}", text);
    }

    /// JSON bodies near the routes' shapes: the fields are what serde_json reads.
    #[test]
    fn near_valid_bodies_decode_as_serde_reads_them(body in body_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&body).expect("JSON")
        } else {
            body.to_string()
        };
        prop_assert_eq!(decode_all(text.as_bytes()), oracle(text.as_bytes()), "{}", text);
    }

    /// `Authorization`: any header value is read without a panic; `Bearer <token>` in any
    /// case and spacing gives the token.
    #[test]
    fn bearer_tokens(
        raw in prop::collection::vec(32u8..=255, 0..40),
        scheme in "[bB][eE][aA][rR][eE][rR]",
        token in "[!-~]{1,40}",
        pad in "[ ]{0,3}",
        gap in "[ ]{1,3}",
    ) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            h.insert(AUTHORIZATION, v);
            if let Some(t) = bearer(&h) {
                prop_assert!(!t.is_empty() && t.trim() == t, "{:?}", t);
            }
        }
        let value = format!("{pad}{scheme}{gap}{token}{pad}");
        h.insert(AUTHORIZATION, HeaderValue::from_str(&value).expect("visible ASCII"));
        prop_assert_eq!(bearer(&h), Some(token.as_str()), "{:?}", value);
    }
}
