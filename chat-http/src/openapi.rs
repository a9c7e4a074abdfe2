//! `GET /openapi.json`: the OpenAPI 3.1 document of the REST API, docs/openapi.json, compiled
//! into the binary. The tests below keep it true to the router (every route documented with
//! its methods, every documented operation routed) and to the one mapping of errors to
//! statuses; the end-to-end suite (tests/tests/e2e/openapi.rs) checks real answers against it.

use hyper::StatusCode;
use hyper::header::HeaderValue;

use crate::reply::{self, Resp};

/// The document, as in docs/openapi.json.
pub(crate) const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// The document as a response (public, like `/healthz`).
pub(crate) fn response() -> Resp {
    let mut resp = reply::raw(StatusCode::OK, "application/json", DOCUMENT);
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use hyper::Method;
    use serde_json::Value;

    use super::*;
    use crate::reply::status_of;
    use crate::router::{FIXED, Matched, PREFIXED, Route, route};

    /// The operations OpenAPI can name in a path item.
    const METHODS: [&str; 8] = [
        "get", "head", "post", "put", "delete", "patch", "options", "trace",
    ];

    /// The JSON Schema keywords the document may use: the ones the end-to-end validator
    /// (tests/tests/e2e/openapi/schema.rs) checks, and annotations. Anything else would be
    /// silently unchecked there, so it is refused here.
    const KEYWORDS: [&str; 18] = [
        "$ref",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "oneOf",
        "allOf",
        "minimum",
        "minLength",
        // Annotations.
        "description",
        "title",
        "examples",
        "format",
        "default",
        "deprecated",
    ];

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
    }

    /// Follows a local `$ref` (`#/components/...`).
    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("a local $ref");
                resolve(
                    doc,
                    doc.pointer(pointer)
                        .unwrap_or_else(|| panic!("$ref {r} resolves")),
                )
            }
            None => v,
        }
    }

    /// `(path, method)` of every operation the document lists.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (key, _) in item.as_object().expect("path item") {
                assert!(
                    METHODS.contains(&key.as_str()) || key == "parameters",
                    "{path}: {key} is not an operation"
                );
                if key != "parameters" {
                    out.insert((path.clone(), key.clone()));
                }
            }
        }
        out
    }

    /// `(path, method)` of every route the router has, paths as OpenAPI writes them.
    fn routed() -> BTreeSet<(String, String)> {
        let fixed = FIXED.iter().map(|(path, _, allow)| (*path, *allow));
        let prefixed = PREFIXED.iter().map(|p| (p.template, p.allow));
        fixed
            .chain(prefixed)
            .flat_map(|(path, allow)| {
                allow
                    .methods()
                    .iter()
                    .map(move |m| (path.to_owned(), (*m).to_owned()))
            })
            .collect()
    }

    /// A concrete path for a documented one: each `{param}` replaced by its `example`.
    fn example_path(doc: &Value, path: &str, op: &Value) -> String {
        let mut out = path.to_owned();
        for p in op["parameters"].as_array().into_iter().flatten() {
            let p = resolve(doc, p);
            if p["in"] == "path" {
                let name = p["name"].as_str().expect("parameter name");
                let example = p["example"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}: path parameter {name} needs an example"));
                out = out.replace(&format!("{{{name}}}"), example);
            }
        }
        assert!(
            !out.contains('{'),
            "{path}: a path parameter is not declared"
        );
        out
    }

    fn method(name: &str) -> Method {
        Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("a method")
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let doc = doc();
        let documented = documented(&doc);
        let routed = routed();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from docs/openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "operations in docs/openapi.json that the router does not have: {unrouted:?}"
        );

        // Each documented path, made concrete, routes with its methods and answers 405 with
        // exactly them in `Allow` to the others.
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let ops: BTreeMap<&str, &Value> = item
                .as_object()
                .expect("path item")
                .iter()
                .filter(|(k, _)| METHODS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            let (_, first) = ops.iter().next().expect("an operation");
            let concrete = example_path(&doc, path, first);
            let allow: Vec<String> = ops.keys().map(|m| m.to_ascii_uppercase()).collect();
            for m in ["get", "head", "post", "put", "delete", "patch", "options"] {
                let got = route(&method(m), &concrete, None);
                if ops.contains_key(m) {
                    assert!(
                        matches!(got, Matched::Found(_)),
                        "{m} {concrete} ({path}): {got:?}"
                    );
                } else {
                    let Matched::WrongMethod { allow: header, .. } = got else {
                        panic!("{m} {concrete} ({path}): {got:?}, want 405");
                    };
                    assert_eq!(header, allow.join(", "), "Allow of {path}");
                }
            }
        }
    }

    #[test]
    fn token_routes_document_their_token_and_public_ones_need_none() {
        let doc = doc();
        assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (m, op) in item.as_object().expect("path item") {
                let concrete = example_path(&doc, path, op);
                let Matched::Found(r) = route(&method(m), &concrete, None) else {
                    panic!("{m} {path} is not routed");
                };
                let responses = op["responses"].as_object().expect("responses");
                let token_route = r.is_api() && r != Route::RegisterUser;
                if token_route {
                    assert!(
                        op.get("security").is_none(),
                        "{m} {path} needs the bearer token (the document's default)"
                    );
                    for status in ["400", "401", "403", "413", "503"] {
                        assert!(
                            responses.contains_key(status),
                            "{m} {path} documents no {status}"
                        );
                    }
                } else {
                    assert!(
                        op.get("security").is_some(),
                        "{m} {path} must say which credentials it takes (`[]` for none)"
                    );
                }
                if r.is_api() {
                    assert!(
                        responses.contains_key("413"),
                        "{m} {path}: every API route reads a body"
                    );
                }
                let op_id = op["operationId"].as_str().unwrap_or_default();
                assert!(!op_id.is_empty(), "{m} {path} has no operationId");
            }
        }
    }

    /// The `code` values a response schema allows, if it is a failure.
    fn codes<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a str> {
        let schema = resolve(doc, schema);
        let mut out = Vec::new();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            out.extend(codes(doc, part));
        }
        let code = &schema["properties"]["code"];
        out.extend(
            code["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
        out.extend(code["const"].as_str());
        out
    }

    #[test]
    fn documented_codes_are_the_errors_of_their_status() {
        let doc = doc();
        let status: BTreeMap<&str, u16> = crate::reply::tests::every_error()
            .iter()
            .map(|e| (e.code(), status_of(e).as_u16()))
            .collect();
        let mut seen = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (m, op) in item.as_object().expect("path item") {
                for (code_status, r) in op["responses"].as_object().expect("responses") {
                    let r = resolve(&doc, r);
                    let Some(schema) = r.pointer("/content/application~1json/schema") else {
                        continue;
                    };
                    for code in codes(&doc, schema) {
                        assert_eq!(
                            status.get(code).map(u16::to_string).as_deref(),
                            Some(code_status.as_str()),
                            "{m} {path}: `{code}` under {code_status}"
                        );
                        seen.insert(code);
                    }
                    let failure = code_status.starts_with(['4', '5']);
                    assert_eq!(
                        failure,
                        !codes(&doc, schema).is_empty(),
                        "{m} {path} {code_status}: a failure lists its codes, a success none"
                    );
                }
            }
        }
        let never: Vec<&str> = status
            .keys()
            .filter(|c| !seen.contains(*c))
            .copied()
            .collect();
        // Codes of socket events (an empty or long message), and the 405 any listed path
        // answers to a method it does not list (components/responses/MethodNotAllowed).
        // `unknown_event` is the socket's own error, not one HTTP can answer.
        assert_eq!(
            never,
            ["empty_message", "message_too_long", "method_not_allowed"],
            "codes the document never names"
        );
        for (name, code) in [
            ("NotFound", "not_found"),
            ("MethodNotAllowed", "method_not_allowed"),
        ] {
            let r = &doc["components"]["responses"][name];
            let schema = &r["content"]["application/json"]["schema"];
            assert_eq!(codes(&doc, schema), [code]);
        }
    }

    /// Walks every schema of the document.
    fn schemas<'a>(v: &'a Value, out: &mut Vec<(String, &'a Value)>, at: String) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let here = format!("{at}/{k}");
                    if k == "schema" || at == "/components/schemas" {
                        walk_schema(child, out, here);
                    } else {
                        schemas(child, out, here);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    schemas(child, out, format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }

    fn walk_schema<'a>(s: &'a Value, out: &mut Vec<(String, &'a Value)>, at: String) {
        out.push((at.clone(), s));
        for (k, child) in s.as_object().into_iter().flatten() {
            match k.as_str() {
                "properties" => {
                    for (name, p) in child.as_object().expect("properties") {
                        walk_schema(p, out, format!("{at}/properties/{name}"));
                    }
                }
                "items" => walk_schema(child, out, format!("{at}/items")),
                "additionalProperties" if child.is_object() => {
                    walk_schema(child, out, format!("{at}/additionalProperties"));
                }
                "allOf" | "oneOf" => {
                    for (i, c) in child.as_array().expect("a list").iter().enumerate() {
                        walk_schema(c, out, format!("{at}/{k}/{i}"));
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_within_the_checked_keywords() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut all = Vec::new();
        schemas(&doc, &mut all, String::new());
        assert!(all.len() > 100, "found only {} schemas", all.len());
        for (at, s) in &all {
            let m = s
                .as_object()
                .unwrap_or_else(|| panic!("{at}: a schema is an object"));
            for k in m.keys() {
                assert!(
                    KEYWORDS.contains(&k.as_str()),
                    "{at}: `{k}` is not a keyword the end-to-end validator checks"
                );
            }
            if let Some(r) = m.get("$ref") {
                resolve(&doc, s);
                assert!(
                    r.as_str().is_some_and(|r| r.starts_with("#/components/")),
                    "{at}: {r}"
                );
            }
            if let Some(req) = m.get("required") {
                for name in req.as_array().expect("required is a list") {
                    let name = name.as_str().expect("a name");
                    assert!(
                        m.get("properties").is_some_and(|p| p.get(name).is_some()),
                        "{at}: required `{name}` has no schema"
                    );
                }
            }
        }
        // Every response reference resolves; operation ids are unique.
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (m, op) in item.as_object().expect("path item") {
                for (_, r) in op["responses"].as_object().expect("responses") {
                    let r = resolve(&doc, r);
                    assert!(r["description"].is_string(), "{m} {path}: {r}");
                }
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id), "operationId {id} twice");
            }
        }
    }

    #[test]
    fn the_document_is_served_as_json() {
        let resp = response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert!(matches!(
            route(&Method::GET, "/openapi.json", None),
            Matched::Found(Route::OpenApi)
        ));
    }
}
