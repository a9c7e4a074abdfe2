//! Routing: a request's method and path to a [`Route`], or to the contract's 404 / 405.
//!
//! Every route has a fixed pattern (`/chatrooms/{room_id}/messages`) that labels it in metrics
//! and logs, so their cardinality is bounded by this file whatever paths clients send.
//!
//! The routes are two tables, [`FIXED`] paths and [`PREFIXED`] ones that carry a parameter:
//! routing is looking a path up in them, and the tests of `crate::openapi` walk them against
//! docs/openapi.json both ways, so a route added here without documenting it fails the tests.

use std::borrow::Cow;

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
    /// `POST /block`.
    Block,
    /// `POST /unblock`.
    Unblock,
    /// `GET /blocked`.
    Blocked,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /ws`.
    Ws,
    /// `GET /openapi.json`: the OpenAPI document of the REST API.
    OpenApi,
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
            Route::Block => "/block",
            Route::Unblock => "/unblock",
            Route::Blocked => "/blocked",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Ws => "/ws",
            Route::OpenApi => "/openapi.json",
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
                | Route::Block
                | Route::Unblock
                | Route::Blocked
        )
    }
}

/// Which methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allow {
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

    /// The methods, as OpenAPI names them.
    #[cfg(test)]
    pub(crate) fn methods(self) -> &'static [&'static str] {
        match self {
            Allow::GetHead => &["get", "head"],
            Allow::Get => &["get"],
            Allow::Post => &["post"],
        }
    }
}

/// The routes at fixed paths. `/chatroom` takes its room from the query (see `find`).
pub(crate) static FIXED: &[(&str, Route, Allow)] = &[
    ("/", Route::Index, Allow::GetHead),
    ("/chatroom", Route::Chatroom(None), Allow::GetHead),
    ("/register_user", Route::RegisterUser, Allow::Post),
    ("/online_users", Route::OnlineUsers, Allow::Get),
    ("/reconnect", Route::Reconnect, Allow::Post),
    ("/send_request", Route::SendRequest, Allow::Post),
    ("/incoming_request", Route::IncomingRequest, Allow::Get),
    ("/respond_request", Route::RespondRequest, Allow::Post),
    ("/cancel_request", Route::CancelRequest, Allow::Post),
    ("/active_chatrooms", Route::ActiveChatrooms, Allow::Get),
    ("/close_room", Route::CloseRoom, Allow::Post),
    ("/ws_ticket", Route::WsTicket, Allow::Post),
    ("/block", Route::Block, Allow::Post),
    ("/unblock", Route::Unblock, Allow::Post),
    ("/blocked", Route::Blocked, Allow::Get),
    ("/healthz", Route::Healthz, Allow::GetHead),
    ("/readyz", Route::Readyz, Allow::GetHead),
    ("/metrics", Route::Metrics, Allow::GetHead),
    ("/openapi.json", Route::OpenApi, Allow::GetHead),
    ("/ws", Route::Ws, Allow::Get),
];

/// A route whose path carries a parameter: the path starts with `prefix`, and `take` reads the
/// route from the rest of the path (and the raw query); `None` is no route (404).
pub(crate) struct Prefixed {
    /// What the path starts with.
    pub(crate) prefix: &'static str,
    /// The path as docs/openapi.json writes it.
    #[cfg_attr(not(test), allow(dead_code))] // read by the OpenAPI tests
    pub(crate) template: &'static str,
    /// The methods it answers.
    pub(crate) allow: Allow,
    /// The route, from the rest of the path and the raw query.
    take: fn(&str, Option<&str>) -> Option<Route>,
}

/// The routes that carry a parameter in their path. No prefix is a prefix of another.
pub(crate) static PREFIXED: &[Prefixed] = &[
    Prefixed {
        prefix: "/static/",
        template: "/static/{name}",
        allow: Allow::GetHead,
        take: |name, _| Asset::find(name).map(Route::Static),
    },
    Prefixed {
        prefix: "/chatroom/",
        template: "/chatroom/{room_id}",
        allow: Allow::GetHead,
        take: chatroom_path,
    },
    Prefixed {
        prefix: "/chatrooms/",
        template: "/chatrooms/{room_id}/messages",
        allow: Allow::Get,
        take: messages_path,
    },
];

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
    if let Some((_, route, allow)) = FIXED.iter().find(|(p, ..)| *p == path) {
        let route = match route {
            Route::Chatroom(_) => chatroom_query(raw_query),
            other => other.clone(),
        };
        return Some((route, *allow));
    }
    let p = PREFIXED.iter().find(|p| path.starts_with(p.prefix))?;
    (p.take)(&path[p.prefix.len()..], raw_query).map(|route| (route, p.allow))
}

/// `/chatroom?room_id=`. A query that does not decode names no room: the 404 page.
fn chatroom_query(raw_query: Option<&str>) -> Route {
    let id = query::lenient_param(raw_query, "room_id");
    Route::Chatroom(id.filter(|s| !s.is_empty()))
}

/// `/chatroom/{room_id}`; `/chatroom/` is `/chatroom`.
fn chatroom_path(rest: &str, raw_query: Option<&str>) -> Option<Route> {
    if rest.is_empty() {
        return Some(chatroom_query(raw_query));
    }
    // The page's script also accepts a trailing slash.
    let id = rest.strip_suffix('/').unwrap_or(rest);
    if id.contains('/') {
        return None;
    }
    let id = query::decode_segment(id)
        .filter(|s| !s.is_empty())
        .map(Cow::into_owned);
    Some(Route::Chatroom(id))
}

/// `/chatrooms/{room_id}/messages`.
fn messages_path(rest: &str, _: Option<&str>) -> Option<Route> {
    let (id, tail) = rest.split_once('/')?;
    if tail != "messages" || id.is_empty() {
        return None;
    }
    // An id that does not decode cannot be a room: the service answers room_not_found.
    let id = query::decode_segment(id).unwrap_or_default().into_owned();
    Some(Route::Messages(id))
}

#[cfg(test)]
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
        assert_eq!(
            route(&Method::GET, "/chatroom/", Some("room_id=r3")),
            Matched::Found(Route::Chatroom(Some("r3".into())))
        );
        assert_eq!(
            route(&Method::GET, "/chatroom//", Some("room_id=r3")),
            Matched::Found(Route::Chatroom(None))
        );
        assert_eq!(
            route(&Method::HEAD, "/openapi.json", None),
            Matched::Found(Route::OpenApi)
        );
        assert_eq!(
            route(&Method::GET, "/chatrooms//messages", None),
            Matched::NotFound
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
