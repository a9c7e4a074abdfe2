//! A validator for the part of JSON Schema (2020-12, as OpenAPI 3.1 uses it) that
//! docs/openapi.json is written in: `$ref` (local), `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `oneOf`, `allOf`, `minimum`, `minLength`,
//! and the annotations `description`, `title`, `examples`, `format`, `default`, `deprecated`.
//!
//! Hand-written rather than the `jsonschema` crate (0.61): that crate, even with its default
//! features (an HTTP resolver on reqwest and rustls) off, adds about forty packages this test
//! binary does not otherwise build (regex and fancy-regex, the num family, strum, a second major
//! version of syn), and, like every full validator, it ignores keywords it does not know, so a
//! misspelt or unsupported keyword would silently check nothing. This
//! one refuses any keyword outside its list (and chat-http's unit tests refuse the document
//! using one), so every keyword in the document is checked.

use serde_json::Value;

/// Annotations: no effect on validation.
const ANNOTATIONS: [&str; 6] = [
    "description",
    "title",
    "examples",
    "format",
    "default",
    "deprecated",
];

/// Checks `value` against `schema`; `root` is the document local `$ref`s point into. The
/// errors name where in the value each failure is.
pub fn validate(root: &Value, schema: &Value, value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(root, schema, value, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Follows a local `$ref` (`#/components/...`) to what it names.
pub fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = r
                .strip_prefix('#')
                .and_then(|pointer| root.pointer(pointer))
                .unwrap_or_else(|| panic!("$ref {r} does not resolve in the document"));
            resolve(root, target)
        }
        None => v,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

fn check(root: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let fail = |errors: &mut Vec<String>, why: String| {
        let at = if at.is_empty() { "/" } else { at };
        errors.push(format!("at {at}: {why}"));
    };
    let m = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return fail(errors, "no value is allowed here".into()),
        Value::Object(m) => m,
        other => panic!("a schema must be an object or a boolean, not {other}"),
    };
    for (keyword, arg) in m {
        match keyword.as_str() {
            "$ref" => check(root, resolve(root, schema), value, at, errors),
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    other => panic!("`type` must be a string or a list: {other}"),
                };
                if !types.iter().any(|t| type_matches(t, value)) {
                    fail(errors, format!("{value} is not of type {types:?}"));
                }
            }
            "properties" => {
                let props = arg.as_object().expect("`properties` is an object");
                if let Some(obj) = value.as_object() {
                    for (name, s) in props {
                        if let Some(v) = obj.get(name) {
                            check(root, s, v, &format!("{at}/{name}"), errors);
                        }
                    }
                }
            }
            "required" => {
                if let Some(obj) = value.as_object() {
                    for name in arg.as_array().expect("`required` is a list") {
                        let name = name.as_str().expect("a property name");
                        if !obj.contains_key(name) {
                            fail(errors, format!("`{name}` is missing from {value}"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(obj) = value.as_object() {
                    let known = m.get("properties").and_then(Value::as_object);
                    for (name, v) in obj {
                        if !known.is_some_and(|k| k.contains_key(name)) {
                            check(root, arg, v, &format!("{at}/{name}"), errors);
                        }
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, v) in items.iter().enumerate() {
                        check(root, arg, v, &format!("{at}/{i}"), errors);
                    }
                }
            }
            "enum" => {
                let allowed = arg.as_array().expect("`enum` is a list");
                if !allowed.contains(value) {
                    fail(errors, format!("{value} is not one of {arg}"));
                }
            }
            "const" => {
                if value != arg {
                    fail(errors, format!("{value} is not {arg}"));
                }
            }
            "allOf" => {
                for s in arg.as_array().expect("`allOf` is a list") {
                    check(root, s, value, at, errors);
                }
            }
            "oneOf" => {
                let branches = arg.as_array().expect("`oneOf` is a list");
                let passing = branches
                    .iter()
                    .filter(|s| validate(root, s, value).is_ok())
                    .count();
                if passing != 1 {
                    fail(
                        errors,
                        format!("{value} matches {passing} of the oneOf branches, not exactly 1"),
                    );
                }
            }
            "minimum" => {
                let min = arg.as_f64().expect("`minimum` is a number");
                if value.as_f64().is_some_and(|v| v < min) {
                    fail(errors, format!("{value} is below {min}"));
                }
            }
            "minLength" => {
                let min = arg.as_u64().expect("`minLength` is a count");
                if let Some(s) = value.as_str()
                    && (s.chars().count() as u64) < min
                {
                    fail(errors, format!("{value} is shorter than {min}"));
                }
            }
            k if ANNOTATIONS.contains(&k) => {}
            k => panic!(
                "the document uses `{k}`, which this validator does not check: \
                 add it here (and to chat-http's openapi::tests::KEYWORDS) first"
            ),
        }
    }
}

#[test]
fn the_validator_checks_each_keyword() {
    use serde_json::json;
    let root = json!({"components": {"schemas": {"Id": {"type": "string", "minLength": 2}}}});
    let s = json!({
        "type": "object",
        "required": ["id", "n"],
        "properties": {
            "id": {"$ref": "#/components/schemas/Id"},
            "n": {"type": "integer", "minimum": 1},
            "k": {"enum": ["a", "b"]},
            "c": {"const": true},
            "l": {"type": "array", "items": {"type": ["string", "null"]}},
            "o": {"oneOf": [{"const": 1}, {"type": "string"}]},
            "all": {"allOf": [{"type": "string"}, {"minLength": 3}]},
        },
        "additionalProperties": false,
    });
    let ok = |v: Value| validate(&root, &s, &v);
    assert_eq!(ok(json!({"id": "ab", "n": 1})), Ok(()));
    assert_eq!(
        ok(
            json!({"id": "ab", "n": 2, "k": "b", "c": true, "l": ["x", null], "o": 1, "all": "abc"})
        ),
        Ok(())
    );
    for bad in [
        json!({"n": 1}),
        json!({"id": "a", "n": 1}),
        json!({"id": "ab", "n": 0}),
        json!({"id": "ab", "n": 1.5}),
        json!({"id": "ab", "n": 1, "k": "c"}),
        json!({"id": "ab", "n": 1, "c": false}),
        json!({"id": "ab", "n": 1, "l": [1]}),
        json!({"id": "ab", "n": 1, "o": 2}),
        json!({"id": "ab", "n": 1, "all": "ab"}),
        json!({"id": "ab", "n": 1, "extra": 1}),
        json!([1]),
    ] {
        assert!(ok(bad.clone()).is_err(), "{bad} should fail");
    }
}
