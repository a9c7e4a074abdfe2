//! Responses: the JSON envelope, and the one mapping of an [`HttpError`] to an HTTP status.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use chat_core::Error;

use crate::error::HttpError;

/// Every response body is in memory: JSON answers, embedded pages, the metrics text.
pub(crate) type Body = Full<Bytes>;
/// A response.
pub(crate) type Resp = Response<Body>;

const JSON: &str = "application/json";
/// On every response: browsers must not guess a type other than the one sent.
const NOSNIFF: (&str, &str) = ("x-content-type-options", "nosniff");

/// The status class of an error, as the contract's conventions assign them.
pub(crate) fn status_of(e: &HttpError) -> StatusCode {
    let e = match e {
        HttpError::NotFound => return StatusCode::NOT_FOUND,
        HttpError::MethodNotAllowed => return StatusCode::METHOD_NOT_ALLOWED,
        HttpError::PayloadTooLarge => return StatusCode::PAYLOAD_TOO_LARGE,
        HttpError::Domain(e) => e,
    };
    match e {
        Error::BadRequest(_)
        | Error::InvalidPhone
        | Error::SelfRequest
        | Error::EmptyMessage
        | Error::MessageTooLong { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthorized => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::UserNotFound | Error::RequestNotFound | Error::RoomNotFound => StatusCode::NOT_FOUND,
        Error::PhoneInUse
        | Error::AlreadyPending
        | Error::RoomExists { .. }
        | Error::TooManyBlocked { .. }
        | Error::TooManyPending { .. } => StatusCode::CONFLICT,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The failure envelope `{"success": false, "error", "code"}` with its status (and
/// `chat_id` / `Retry-After` where the error carries them).
pub(crate) fn error(e: impl Into<HttpError>) -> Resp {
    let e = e.into();
    let mut body = Map::new();
    body.insert("success".into(), Value::Bool(false));
    body.insert("error".into(), Value::String(e.to_string()));
    body.insert("code".into(), Value::String(e.code().into()));
    if let HttpError::Domain(Error::RoomExists { chat_id }) = &e {
        body.insert("chat_id".into(), Value::String(chat_id.to_string()));
    }
    let mut resp = json(status_of(&e), Value::Object(body));
    if let HttpError::Domain(Error::RateLimited { retry_after_secs }) = e {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    resp
}

/// A success: `fields` with `"success": true` added.
pub(crate) fn ok(fields: Value) -> Resp {
    let mut body = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("success".into(), Value::Bool(true));
    json(StatusCode::OK, Value::Object(body))
}

/// `{"success": true}` alone.
pub(crate) fn ok_empty() -> Resp {
    ok(json!({}))
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: Value) -> Resp {
    let bytes = serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"success\":false}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
    // API answers are about one user's state at one moment.
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

/// A non-JSON response from text made for it.
pub(crate) fn text(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
    resp
}

/// A non-JSON response from static text.
pub(crate) fn raw(status: StatusCode, content_type: &'static str, body: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
    resp
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One error of each kind the contract names (for the tests of this crate).
    pub(crate) fn every_error() -> Vec<HttpError> {
        let domain = [
            Error::bad_request("x"),
            Error::InvalidPhone,
            Error::SelfRequest,
            Error::EmptyMessage,
            Error::MessageTooLong { max: 1 },
            Error::Unauthorized,
            Error::forbidden("x"),
            Error::UserNotFound,
            Error::RequestNotFound,
            Error::RoomNotFound,
            Error::PhoneInUse,
            Error::AlreadyPending,
            Error::RoomExists {
                chat_id: chat_core::RoomId::generate(),
            },
            Error::TooManyBlocked { max: 1000 },
            Error::TooManyPending { max: 20 },
            Error::RateLimited {
                retry_after_secs: 3,
            },
            Error::unavailable("down"),
        ];
        let transport = [
            HttpError::NotFound,
            HttpError::MethodNotAllowed,
            HttpError::PayloadTooLarge,
        ];
        domain
            .into_iter()
            .map(HttpError::from)
            .chain(transport)
            .collect()
    }

    #[test]
    fn every_error_maps_to_a_4xx_or_503() {
        let all = every_error();
        for e in &all {
            let s = status_of(e).as_u16();
            assert!((400..500).contains(&s) || s == 503, "{e:?} → {s}");
        }
        let r = error(Error::RateLimited {
            retry_after_secs: 3,
        });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
    }
}
