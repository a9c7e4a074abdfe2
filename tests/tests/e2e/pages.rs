//! The pages: served with a Content-Security-Policy that allows no inline script, with no inline
//! script in the HTML, and scripts that never turn a user's string into markup.

use std::collections::BTreeSet;

use chat_tests::{App, Backend, Response, bounded};

const A: &str = "+14155550161";
const B: &str = "+14155550162";

#[tokio::test]
async fn pages_are_served_with_a_strict_csp() {
    bounded(async {
        let app = App::start(Backend::Memory, &[]).await;
        let a = app.register(A).await;
        let bu = app.register(B).await;
        let room = app.make_room(&a, &bu).await;

        let home = app.get("/", None).await;
        check_page(&home, 200);
        for path in [
            format!("/chatroom/{room}"),
            format!("/chatroom?room_id={room}"),
        ] {
            let r = app.get(&path, None).await;
            check_page(&r, 200);
        }
        for path in [
            "/chatroom/00000000-0000-4000-8000-000000000000".to_owned(),
            "/chatroom/not-a-uuid".to_owned(),
            "/chatroom?room_id=nope".to_owned(),
            "/chatroom".to_owned(),
            format!("/chatroom/{room}%3Cscript%3E"),
        ] {
            let r = app.get(&path, None).await;
            check_page(&r, 404);
            assert!(
                !r.text().contains("<script>"),
                "{path}: the 404 page reflects input"
            );
        }
        // Pages are public: a bogus token changes nothing.
        check_page(&app.get("/", Some("bogus")).await, 200);
    })
    .await
}

#[tokio::test]
async fn scripts_never_render_user_strings_as_markup() {
    bounded(async {
        let app = App::start(Backend::Memory, &[]).await;
        let a = app.register(A).await;
        let bu = app.register(B).await;
        let room = app.make_room(&a, &bu).await;
        let mut scripts = BTreeSet::new();
        let mut styles = BTreeSet::new();
        for path in ["/".to_owned(), format!("/chatroom/{room}")] {
            let html = app.get(&path, None).await.text();
            scripts.extend(attr_values(&html, "script", "src"));
            styles.extend(
                attr_values(&html, "link", "href")
                    .into_iter()
                    .filter(|h| h.ends_with(".css")),
            );
        }
        assert!(!scripts.is_empty(), "the pages reference no script at all");
        let mut all_js = String::new();
        for src in &scripts {
            assert!(
                src.starts_with("/static/"),
                "script {src} is not served by this server"
            );
            let r = app.get(src, None).await;
            assert_eq!(r.status, 200, "GET {src}");
            let ct = r.header("content-type").unwrap_or_default();
            assert!(ct.contains("javascript"), "{src}: content-type {ct:?}");
            let js = r.text();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "createContextualFragment",
                "DOMParser",
            ] {
                assert!(!js.contains(banned), "{src} uses {banned}");
            }
            // setTimeout/setInterval with a string argument evaluate it.
            for timer in [
                "setTimeout('",
                "setTimeout(\"",
                "setInterval('",
                "setInterval(\"",
            ] {
                assert!(!js.contains(timer), "{src} passes a string to a timer");
            }
            all_js.push_str(&js);
        }
        assert!(
            all_js.contains("textContent"),
            "the scripts render messages without textContent"
        );
        for href in &styles {
            let r = app.get(href, None).await;
            assert_eq!(r.status, 200, "GET {href}");
            let ct = r.header("content-type").unwrap_or_default();
            assert!(ct.starts_with("text/css"), "{href}: content-type {ct:?}");
        }
        // No directory tricks on /static.
        for path in [
            "/static/../Cargo.toml",
            "/static/%2e%2e/Cargo.toml",
            "/static/",
        ] {
            let r = app.get(path, None).await;
            assert!(
                r.status == 404 || r.status == 400,
                "{path}: {} {}",
                r.status,
                r.text()
            );
        }
    })
    .await
}

/// A page with this status: HTML, a CSP without inline script, no inline script or handler.
#[track_caller]
fn check_page(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}: {}", r.request, r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/html"),
        "{}: content-type {ct:?}",
        r.request
    );
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{}: no Content-Security-Policy", r.request));
    let script_src = directive(csp, "script-src")
        .or_else(|| directive(csp, "default-src"))
        .unwrap_or_else(|| panic!("{}: CSP {csp:?} limits no script source", r.request));
    for bad in [
        "'unsafe-inline'",
        "'unsafe-eval'",
        "*",
        "data:",
        "http:",
        "https:",
    ] {
        assert!(
            !script_src.split_whitespace().any(|s| s == bad),
            "{}: CSP script source allows {bad}: {csp:?}",
            r.request
        );
    }
    let html = r.text();
    assert!(
        html.to_ascii_lowercase().contains("<!doctype html"),
        "{}: not an HTML document",
        r.request
    );
    check_no_inline_script(&html, &r.request);
}

/// The value of one CSP directive.
fn directive<'a>(csp: &'a str, name: &str) -> Option<&'a str> {
    csp.split(';').map(str::trim).find_map(|d| {
        let (n, rest) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
        n.eq_ignore_ascii_case(name).then_some(rest.trim())
    })
}

/// Every `<script>` has a `src` and no body; no tag has an `on*=` attribute or a `javascript:` URL.
fn check_no_inline_script(html: &str, what: &str) {
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let end = lower[i..].find('>').map(|e| i + e).unwrap_or(lower.len());
        let tag = &lower[i..end];
        assert!(
            tag.contains(" src="),
            "{what}: inline <script> at {i}: {tag}"
        );
        let body_end = lower[end..].find("</script>").map(|e| end + e);
        if let Some(body_end) = body_end {
            let body = &lower[end + 1..body_end];
            assert!(
                body.trim().is_empty(),
                "{what}: <script src> with a body: {body}"
            );
        }
    }
    for tag in tags(&lower) {
        for attr in tag.split_whitespace().skip(1) {
            let name = attr.split('=').next().unwrap_or_default();
            assert!(
                !(name.starts_with("on") && attr.contains('=')),
                "{what}: inline handler {attr} in <{tag}>"
            );
        }
        assert!(
            !tag.contains("javascript:"),
            "{what}: javascript: URL in <{tag}>"
        );
    }
}

/// The insides of every tag (`<...>`), lower-cased input expected.
fn tags(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else { break };
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    out
}

/// The values of `attr` on every `<tag ...>`.
fn attr_values(html: &str, tag: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let open = format!("<{tag}");
    for (i, _) in html.match_indices(&open) {
        let end = html[i..].find('>').map(|e| i + e).unwrap_or(html.len());
        let t = &html[i..end];
        let key = format!("{attr}=\"");
        if let Some(p) = t.find(&key) {
            let v = &t[p + key.len()..];
            if let Some(q) = v.find('"') {
                out.push(v[..q].to_owned());
            }
        }
    }
    out
}

#[test]
fn the_html_checks_catch_inline_script() {
    let bad = [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<body onload=\"x()\">",
    ];
    for html in bad {
        let r = std::panic::catch_unwind(|| check_no_inline_script(html, "test"));
        assert!(r.is_err(), "not caught: {html}");
    }
    check_no_inline_script(
        "<script src=\"/static/a.js\" defer></script><p class=\"online\">x</p>",
        "test",
    );
    assert_eq!(
        directive("default-src 'self'; script-src 'self'", "script-src"),
        Some("'self'")
    );
}
