//! `GET /ws`: checks an upgrade request, answers 101 and hands the upgraded connection to the
//! [`chat_ws::Hub`]. The socket protocol itself is chat-ws's.

use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use chat_core::{Error, Result};
use chat_ws::Hub;

use crate::App;
use crate::api::bearer;
use crate::query;
use crate::reply::{self, Resp};

/// Whether a header holds `token` among its comma-separated values (case-insensitive).
fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `origin` may open a socket: any when no list is configured; a request without
/// `Origin` (not a browser) always may.
pub(crate) fn origin_allowed(allowed: Option<&[String]>, origin: Option<&str>) -> bool {
    match (allowed, origin) {
        (None, _) | (_, None) => true,
        (Some(list), Some(origin)) => {
            let origin = normalize_origin(origin);
            list.iter().any(|a| normalize_origin(a) == origin)
        }
    }
}

/// Origins compare without case and without a trailing slash.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// What an upgrade authenticates with.
enum Credential {
    Token(String),
    Ticket(String),
}

/// Answers an upgrade request: 101 and a spawned socket, or the first failed check's error.
pub(crate) async fn upgrade(app: &App, mut req: Request<Incoming>) -> Result<Resp> {
    let headers = req.headers();
    // Route step: `GET /ws` that is not an upgrade.
    if !(has_token(headers, UPGRADE, "websocket") && has_token(headers, CONNECTION, "upgrade")) {
        return Err(Error::bad_request("GET /ws needs a WebSocket upgrade"));
    }
    // Token step: the header, else `?token=`, else a single-use `?ticket=` from
    // `POST /ws_ticket` (browsers cannot set headers on a WebSocket; a ticket keeps the token
    // out of the URL).
    let query = req.uri().query();
    let credential = match bearer(headers) {
        Some(t) => Some(Credential::Token(t.to_owned())),
        None => query::lenient_param(query, "token")
            .map(Credential::Token)
            .or_else(|| query::lenient_param(query, "ticket").map(Credential::Ticket)),
    }
    .ok_or(Error::Unauthorized)?;
    let service = app.service().clone();
    let session = crate::guarded(async move {
        match credential {
            Credential::Token(token) => service.authenticate_socket(&token).await,
            Credential::Ticket(ticket) => service.ticket_session(&ticket).await,
        }
    })
    .await?;

    let headers = req.headers();
    let origin = headers.get(ORIGIN).map(|v| v.to_str().unwrap_or("\u{0}"));
    if !origin_allowed(app.config().allowed_origins.as_deref(), origin) {
        return Err(Error::forbidden("this origin may not open a WebSocket"));
    }
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let accept = headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(Hub::accept_key);
    let (true, Some(accept)) = (version_ok, accept) else {
        return Err(Error::bad_request(
            "a WebSocket upgrade needs Sec-WebSocket-Version 13 and a valid Sec-WebSocket-Key",
        ));
    };
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| Error::bad_request("invalid Sec-WebSocket-Key"))?;

    let on_upgrade = hyper::upgrade::on(&mut req);
    let hub = app.hub().clone();
    app.track(async move {
        match on_upgrade.await {
            Ok(upgraded) => hub.serve(TokioIo::new(upgraded), session).await,
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    });

    let mut resp = reply::raw(StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
    let h = resp.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let list = vec!["https://chat.example".to_owned()];
        assert!(origin_allowed(None, Some("https://evil.example")));
        assert!(origin_allowed(Some(&list), None));
        assert!(origin_allowed(Some(&list), Some("HTTPS://chat.example/")));
        assert!(!origin_allowed(Some(&list), Some("https://evil.example")));
        assert!(!origin_allowed(Some(&list), Some("null")));
    }
}
