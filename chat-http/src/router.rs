//! Routing: a request's method and path to a [`Route`], or to the contract's 404 / 405.
//!
//! Every route has a fixed pattern (`/chatrooms/{room_id}/messages`) that labels it in metrics
//! and logs, so their cardinality is bounded by this file whatever paths clients send.

use hyper::Method;

use crate::pages::Asset;
use crate::query;

/// A known route with what its path carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /`: the home page.
    Index,
    /// `GET /chatroom/{room_id}` or `GET /chatroom?room_id=`: `None` when no id was given.
    Chatroom(Option<String>),
    /// `GET /static/{name}`.
    Static(&'static Asset),
    /// `POST /register_user`.
    RegisterUser,
    /// `GET /online_users`.
    OnlineUsers,
    /// `POST /reconnect`.
    Reconnect,
    /// `POST /send_request`.
    SendRequest,
    /// `GET /incoming_request`.
    IncomingRequest,
    /// `POST /respond_request`.
    RespondRequest,
    /// `POST /cancel_request`.
    CancelRequest,
    /// `GET /active_chatrooms`.
    ActiveChatrooms,
    /// `GET /chatrooms/{room_id}/messages`.
    Messages(String),
    /// `POST /close_room`.
    CloseRoom,
    /// `POST /ws_ticket`.
    WsTicket,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /ws`.
    Ws,
}

impl Route {
    /// The route's pattern: its label in metrics and logs.
    pub(crate) fn pattern(&self) -> &'static str {
        match self {
            Route::Index => "/",
            Route::Chatroom(_) => "/chatroom",
            Route::Static(_) => "/static/{name}",
            Route::RegisterUser => "/register_user",
            Route::OnlineUsers => "/online_users",
            Route::Reconnect => "/reconnect",
            Route::SendRequest => "/send_request",
            Route::IncomingRequest => "/incoming_request",
            Route::RespondRequest => "/respond_request",
            Route::CancelRequest => "/cancel_request",
            Route::ActiveChatrooms => "/active_chatrooms",
            Route::Messages(_) => "/chatrooms/{room_id}/messages",
            Route::CloseRoom => "/close_room",
            Route::WsTicket => "/ws_ticket",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Ws => "/ws",
        }
    }

    /// Whether the route is part of the token-protected JSON API (reads a body, 401 without a
    /// token). Registration is, though it needs no token.
    pub(crate) fn is_api(&self) -> bool {
        matches!(
            self,
            Route::RegisterUser
                | Route::OnlineUsers
                | Route::Reconnect
                | Route::SendRequest
                | Route::IncomingRequest
                | Route::RespondRequest
                | Route::CancelRequest
                | Route::ActiveChatrooms
                | Route::Messages(_)
                | Route::CloseRoom
                | Route::WsTicket
        )
    }
}

/// Which methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// Public reads: pages, assets, operations. HEAD is answered like GET without a body.
    GetHead,
    /// API reads and the WebSocket upgrade.
    Get,
    /// API writes.
    Post,
}

impl Allow {
    fn permits(self, method: &Method) -> bool {
        match self {
            Allow::GetHead => method == Method::GET || method == Method::HEAD,
            Allow::Get => method == Method::GET,
            Allow::Post => method == Method::POST,
        }
    }

    /// The `Allow` header of a 405.
    fn header(self) -> &'static str {
        match self {
            Allow::GetHead => "GET, HEAD",
            Allow::Get => "GET",
            Allow::Post => "POST",
        }
    }
}

/// The outcome of routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matched {
    /// A route that answers this method.
    Found(Route),
    /// A known route, another method: 405 with this `Allow` header.
    WrongMethod {
        /// The route's pattern, for metrics.
        pattern: &'static str,
        /// Methods it answers.
        allow: &'static str,
    },
    /// No such route: 404.
    NotFound,
}

/// The metrics label of requests that matched no route.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Routes a request. `path` is the raw (percent-encoded) path, `raw_query` the raw query.
pub(crate) fn route(method: &Method, path: &str, raw_query: Option<&str>) -> Matched {
    let Some((route, allow)) = find(path, raw_query) else {
        return Matched::NotFound;
    };
    if allow.permits(method) {
        Matched::Found(route)
    } else {
        Matched::WrongMethod {
            pattern: route.pattern(),
            allow: allow.header(),
        }
    }
}

fn find(path: &str, raw_query: Option<&str>) -> Option<(Route, Allow)> {
    let fixed = match path {
        "/" => Some((Route::Index, Allow::GetHead)),
        "/register_user" => Some((Route::RegisterUser, Allow::Post)),
        "/online_users" => Some((Route::OnlineUsers, Allow::Get)),
        "/reconnect" => Some((Route::Reconnect, Allow::Post)),
        "/send_request" => Some((Route::SendRequest, Allow::Post)),
        "/incoming_request" => Some((Route::IncomingRequest, Allow::Get)),
        "/respond_request" => Some((Route::RespondRequest, Allow::Post)),
        "/cancel_request" => Some((Route::CancelRequest, Allow::Post)),
        "/active_chatrooms" => Some((Route::ActiveChatrooms, Allow::Get)),
        "/close_room" => Some((Route::CloseRoom, Allow::Post)),
        "/ws_ticket" => Some((Route::WsTicket, Allow::Post)),
        "/healthz" => Some((Route::Healthz, Allow::GetHead)),
        "/readyz" => Some((Route::Readyz, Allow::GetHead)),
        "/metrics" => Some((Route::Metrics, Allow::GetHead)),
        "/ws" => Some((Route::Ws, Allow::Get)),
        "/chatroom" | "/chatroom/" => {
            // A query that does not decode names no room: the 404 page.
            let id = query::lenient_param(raw_query, "room_id");
            Some((
                Route::Chatroom(id.filter(|s| !s.is_empty())),
                Allow::GetHead,
            ))
        }
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    if let Some(rest) = path.strip_prefix("/static/") {
        return Asset::find(rest).map(|a| (Route::Static(a), Allow::GetHead));
    }
    if let Some(rest) = path.strip_prefix("/chatroom/") {
        // The page's script also accepts a trailing slash.
        let id = rest.strip_suffix('/').unwrap_or(rest);
        if !id.contains('/') {
            let id = query::decode_segment(id)
                .filter(|s| !s.is_empty())
                .map(|s| s.into_owned());
            return Some((Route::Chatroom(id), Allow::GetHead));
        }
        return None;
    }
    if let Some(rest) = path.strip_prefix("/chatrooms/") {
        let (id, tail) = rest.split_once('/')?;
        if tail == "messages" && !id.is_empty() {
            // An id that does not decode cannot be a room: the service answers room_not_found.
            let id = query::decode_segment(id).unwrap_or_default().into_owned();
            return Some((Route::Messages(id), Allow::Get));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that unwraps fails loudly, as it should
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(
            route(&Method::POST, "/register_user", None),
            Matched::Found(Route::RegisterUser)
        );
        assert_eq!(
            route(&Method::GET, "/register_user", None),
            Matched::WrongMethod {
                pattern: "/register_user",
                allow: "POST"
            }
        );
        assert_eq!(route(&Method::GET, "/nope", None), Matched::NotFound);
        assert_eq!(
            route(&Method::HEAD, "/", None),
            Matched::Found(Route::Index)
        );
        assert!(matches!(
            route(&Method::HEAD, "/ws", None),
            Matched::WrongMethod { .. }
        ));
    }

    #[test]
    fn path_parameters() {
        assert_eq!(
            route(&Method::GET, "/chatrooms/abc/messages", None),
            Matched::Found(Route::Messages("abc".into()))
        );
        assert_eq!(
            route(&Method::GET, "/chatrooms/abc/other", None),
            Matched::NotFound
        );
        assert_eq!(
            route(&Method::GET, "/chatroom/r1/", None),
            Matched::Found(Route::Chatroom(Some("r1".into())))
        );
        assert_eq!(
            route(&Method::GET, "/chatroom", Some("room_id=r%32")),
            Matched::Found(Route::Chatroom(Some("r2".into())))
        );
        assert_eq!(
            route(&Method::GET, "/chatroom", None),
            Matched::Found(Route::Chatroom(None))
        );
        assert!(matches!(
            route(&Method::GET, "/static/home.js", None),
            Matched::Found(Route::Static(_))
        ));
        assert_eq!(
            route(&Method::GET, "/static/../Cargo.toml", None),
            Matched::NotFound
        );
    }
}
