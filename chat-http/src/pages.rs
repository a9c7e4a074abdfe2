//! The HTML pages and their static assets, compiled into the binary.

use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};

use crate::reply::{self, Resp};

/// Pages may load scripts, styles and images from this origin only and open WebSockets; no
/// inline script, no framing, no `<base>`.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";

const INDEX: &str = include_str!("../assets/index.html");
const CHATROOM: &str = include_str!("../assets/chatroom.html");
const NOT_FOUND: &str = include_str!("../assets/notfound.html");

/// A static file served under `/static/`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Asset {
    /// Its name under `/static/`.
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: [Asset; 4] = [
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_str!("../assets/common.js"),
    },
    Asset {
        name: "home.js",
        content_type: JS,
        body: include_str!("../assets/home.js"),
    },
    Asset {
        name: "chatroom.js",
        content_type: JS,
        body: include_str!("../assets/chatroom.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
];

impl Asset {
    /// The asset named `name`, if there is one.
    pub(crate) fn find(name: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|a| a.name == name)
    }

    /// The asset as a response.
    pub(crate) fn response(&self) -> Resp {
        let mut resp = reply::raw(StatusCode::OK, self.content_type, self.body);
        resp.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        resp
    }
}

/// The home page.
pub(crate) fn index() -> Resp {
    page(StatusCode::OK, INDEX)
}

/// The chatroom page.
pub(crate) fn chatroom() -> Resp {
    page(StatusCode::OK, CHATROOM)
}

/// The 404 page (for a room that does not exist).
pub(crate) fn not_found() -> Resp {
    page(StatusCode::NOT_FOUND, NOT_FOUND)
}

fn page(status: StatusCode, html: &'static str) -> Resp {
    let mut resp = reply::raw(status, HTML, html);
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    // Room ids are in page URLs; keep them out of other sites' logs.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    debug_assert!(h.contains_key(CONTENT_TYPE));
    resp
}
