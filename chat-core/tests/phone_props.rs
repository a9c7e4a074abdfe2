//! Property tests of phone normalisation, against the contract's sentence: "after removing
//! spaces, `-`, `(` and `)`, a phone is an optional `+` then 7 to 15 ASCII digits; anything
//! else is 400 `invalid_phone`", and of the listing cursor's form of a phone.
//!
//! Cases: a few thousand per property; `PROPTEST_CASES=100000 cargo test -p chat-core --test
//! phone_props` runs more.

use chat_core::{Error, Phone};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

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

/// The contract's rule, written out: the normalised phone, or `None` for `invalid_phone`.
fn normalised(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    let ok =
        (7..=15).contains(&digits.chars().count()) && digits.chars().all(|c| c.is_ascii_digit());
    ok.then_some(kept)
}

/// Text near phones: digits, the removed separators, a `+` or two, other white space and
/// digits of other scripts (which are not ASCII digits); sometimes anything.
fn near_phone() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[+]?[0-9 ()-]{0,22}",
        2 => "[0-9 ()+\t.\u{a0}\u{660}-\u{669}\u{ff10}-\u{ff19}a-]{0,20}",
        1 => any::<String>(),
    ]
}

/// A valid phone as a person may type it: separators anywhere.
fn typed_phone() -> impl Strategy<Value = (String, String)> {
    (
        any::<bool>(),
        "[0-9]{7,15}",
        prop::collection::vec(
            prop::sample::select(vec!["", "", "", " ", "-", "(", ")", "  "]),
            17,
        ),
    )
        .prop_map(|(plus, digits, seps)| {
            let want = format!("{}{digits}", if plus { "+" } else { "" });
            let mut typed = String::from(seps[0]);
            if plus {
                typed.push('+');
                typed.push_str(seps[1]);
            }
            for (i, d) in digits.chars().enumerate() {
                typed.push(d);
                typed.push_str(seps[(i + 2) % seps.len()]);
            }
            (typed, want)
        })
}

proptest! {
    #![proptest_config(ci_config(4000))]

    /// Any text: the contract's normalised phone, or `invalid_phone`; never a panic.
    #[test]
    fn parse_is_the_contract_rule(raw in near_phone()) {
        match (Phone::parse(&raw), normalised(&raw)) {
            (Ok(p), Some(want)) => prop_assert_eq!(p.as_str(), want.as_str()),
            (Err(e), None) => prop_assert_eq!(e, Error::InvalidPhone),
            (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", raw, got, want),
        }
    }

    /// A phone typed with separators anywhere is its digits (and `+`); normalising again
    /// changes nothing.
    #[test]
    fn typed_phones_normalise((typed, want) in typed_phone()) {
        let p = Phone::parse(&typed).map_err(|e| TestCaseError::fail(format!("{typed:?}: {e}")))?;
        prop_assert_eq!(p.as_str(), want.as_str());
        prop_assert_eq!(Phone::parse(p.as_str()).ok(), Some(p.clone()));
        prop_assert_eq!(p.to_string(), want);
    }

    /// The cursor form is letters and digits only and reads back as the phone; reading any
    /// text gives a phone only for text that is some phone's cursor form.
    #[test]
    fn cursor_form_round_trips(
        (typed, _) in typed_phone(),
        raw in prop_oneof![near_phone(), "p?[0-9+ ]{0,17}"],
    ) {
        let p = Phone::parse(&typed).map_err(|e| TestCaseError::fail(format!("{typed:?}: {e}")))?;
        let cursor = p.cursor_form();
        prop_assert!(cursor.bytes().all(|b| b.is_ascii_alphanumeric()), "{:?}", cursor);
        prop_assert_eq!(Phone::from_cursor_form(&cursor), Some(p));
        if let Some(q) = Phone::from_cursor_form(&raw) {
            prop_assert_eq!(q.cursor_form(), raw);
        }
    }
}
