//! The JSON API. Each route runs the contract's checks in its order — (route and method are
//! done by the router,) body size, token, rate limit, body shape, caller identity, field
//! values, state — and the first that fails answers. The field-value and state checks are the
//! service's; this module only decodes, authenticates and encodes.

use std::net::IpAddr;
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, EXPECT, HeaderMap};
use hyper::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use chat_core::{Error, RequestSent, Result, RoomSummary};

use crate::App;
use crate::error::{HttpError, HttpResult};
use crate::query;
use crate::reply::{self, Resp};
use crate::router::Route;

/// Largest request body the API reads (the contract's 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// After a 413, up to this much of the rest of the body is read and dropped, so the client
/// reads the answer instead of a connection reset. Larger bodies are cut off unanswered-ish.
const DRAIN_MAX_BYTES: u64 = 1024 * 1024;
/// How long that draining may take.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads a request body of at most [`MAX_BODY_BYTES`] within `timeout`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Incoming,
    timeout: Duration,
) -> HttpResult<Bytes> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES as u64) {
        // A client waiting for `100 Continue` has sent nothing: nothing to drain.
        let waiting = headers.contains_key(EXPECT);
        if !waiting && n <= MAX_BODY_BYTES as u64 + DRAIN_MAX_BYTES {
            drain(&mut body).await;
        }
        return Err(HttpError::PayloadTooLarge);
    }
    let read = tokio::time::timeout(timeout, Limited::new(&mut body, MAX_BODY_BYTES).collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            drain(&mut body).await;
            Err(HttpError::PayloadTooLarge)
        }
        Ok(Err(_)) => Err(Error::bad_request("the request body could not be read").into()),
        Err(_) => Err(Error::bad_request("the request body did not arrive in time").into()),
    }
}

async fn drain(body: &mut Incoming) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The token of `Authorization: Bearer <token>`, if the header has that form.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Parses a body as a JSON object of shape `T`: anything else is `bad_request`. Unknown
/// fields are ignored; the Content-Type is not looked at.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Error::bad_request("the body must be a JSON object"))?;
    if !value.is_object() {
        return Err(Error::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| Error::bad_request(format!("bad body: {e}")))
}

#[derive(Deserialize)]
struct RegisterBody {
    phone: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct SendRequestBody {
    phone1: Option<String>,
    phone2: String,
}

#[derive(Deserialize)]
struct RespondBody {
    phone1: String,
    phone2: Option<String>,
    action: String,
}

#[derive(Deserialize)]
struct CancelBody {
    phone2: String,
}

/// `/block` and `/unblock`.
#[derive(Deserialize)]
struct BlockBody {
    phone: String,
}

#[derive(Deserialize)]
struct CloseRoomBody {
    chat_id: String,
}

/// `active_chatrooms` entries (also `reconnect`'s `chatrooms`): with the caller's `unread`
/// count and the room's newest `<message>` or null.
fn rooms_json(rooms: &[RoomSummary]) -> Result<Value> {
    rooms
        .iter()
        .map(|r| {
            let last_message = r
                .last_message
                .as_ref()
                .map(|m| {
                    chat_ws::message_json(m)
                        .and_then(|raw| serde_json::from_str::<Value>(raw.get()))
                        .map_err(|e| {
                            tracing::error!(error = %e, "a stored message did not encode");
                            Error::unavailable(format!("a stored message did not encode: {e}"))
                        })
                })
                .transpose()?;
            Ok(json!({
                "chat_id": r.chat_id.to_string(),
                "other_user": r.other_user.as_str(),
                "expires_at": r.expires_at,
                "unread": r.unread,
                "last_message": last_message,
            }))
        })
        .collect::<Result<Vec<Value>>>()
        .map(Value::Array)
}

/// The names of the other members of `rooms`.
async fn room_names(
    service: &chat_core::ChatService,
    rooms: &[RoomSummary],
) -> Result<chat_core::Names> {
    let others: Vec<chat_core::Phone> = rooms.iter().map(|r| r.other_user.clone()).collect();
    service.names(&others).await
}

/// Answers an API route whose body has been read.
pub(crate) async fn handle(
    app: App,
    route: Route,
    parts: Parts,
    body: Bytes,
    peer: IpAddr,
) -> HttpResult<Resp> {
    let service = app.service();
    if route == Route::RegisterUser {
        let refresh = bearer(&parts.headers);
        app.take_registration(peer)?;
        let b: RegisterBody = parse(&body)?;
        let reg = service.register(&b.phone, b.name, refresh).await?;
        return Ok(reply::ok(json!({
            "message": true,
            "phone": reg.session.phone.as_str(),
            "token": reg.token.as_str(),
            "expires_in": reg.expires_in,
        })));
    }

    let token = bearer(&parts.headers).ok_or(Error::Unauthorized)?;
    let session = service.authenticate_request(token).await?;
    let me = &session.phone;
    let raw_query = parts.uri.query();
    query::validate(raw_query)?;
    let q = |name: &str| query::param(raw_query, name);
    // An empty `cursor=` or `after=` is the parameter left out (the contract writes
    // `?cursor=&limit=`); an empty `limit=` is not a positive integer.
    let q_or_none = |name: &str| query::param_or_none(raw_query, name);
    // `?phone=` names the caller on any route.
    let named = q("phone");

    match route {
        Route::OnlineUsers => {
            service.check_caller(&session, named.as_deref())?;
            let page = service
                .online_users(me, q_or_none("cursor"), q("limit").as_deref())
                .await?;
            let names = service.names(&page.phones).await?;
            let phones: Vec<&str> = page.phones.iter().map(|p| p.as_str()).collect();
            Ok(reply::ok(json!({
                "online_users": phones,
                "next_cursor": page.next_cursor,
                "names": names,
            })))
        }
        Route::Reconnect => {
            // Any body: authenticating has already refreshed presence.
            service.check_caller(&session, named.as_deref())?;
            let rooms = service.active_rooms(me).await?;
            let names = room_names(service, &rooms).await?;
            Ok(reply::ok(json!({
                "data": {"status": "reconnected", "chatrooms": rooms_json(&rooms)?},
                "names": names,
            })))
        }
        Route::SendRequest => {
            let b: SendRequestBody = parse(&body)?;
            service.check_caller(&session, named.as_deref())?;
            service.check_caller(&session, b.phone1.as_deref())?;
            Ok(match service.send_request(me, &b.phone2).await? {
                RequestSent::Sent => reply::ok(json!({"message": "Request sent successfully"})),
                RequestSent::Accepted(room) => reply::ok(json!({
                    "message": {"accepted": true, "chat_id": room.to_string()},
                })),
            })
        }
        Route::IncomingRequest => {
            service.check_caller(&session, named.as_deref())?;
            let r = service.requests(me).await?;
            let listed: Vec<chat_core::Phone> = r.incoming.iter().chain(&r.sent).cloned().collect();
            let names = service.names(&listed).await?;
            let list = |v: &[chat_core::Phone]| -> Vec<String> {
                v.iter().map(|p| p.as_str().to_owned()).collect()
            };
            Ok(reply::ok(json!({
                "incoming_request": list(&r.incoming),
                "sent_request": list(&r.sent),
                "names": names,
            })))
        }
        Route::RespondRequest => {
            let b: RespondBody = parse(&body)?;
            service.check_caller(&session, named.as_deref())?;
            service.check_caller(&session, b.phone2.as_deref())?;
            Ok(
                match service
                    .respond_request(me, &b.phone1, b.action.parse()?)
                    .await?
                {
                    Some(room) => reply::ok(json!({
                        "message": {"accepted": true, "chat_id": room.to_string()},
                    })),
                    None => reply::ok(json!({"message": {"accepted": false}})),
                },
            )
        }
        Route::CancelRequest => {
            let b: CancelBody = parse(&body)?;
            service.check_caller(&session, named.as_deref())?;
            service.cancel_request(me, &b.phone2).await?;
            Ok(reply::ok(json!({"message": "Request cancelled"})))
        }
        Route::ActiveChatrooms => {
            service.check_caller(&session, named.as_deref())?;
            let rooms = service.active_rooms(me).await?;
            let names = room_names(service, &rooms).await?;
            Ok(reply::ok(
                json!({"chatrooms": rooms_json(&rooms)?, "names": names}),
            ))
        }
        Route::Messages(room) => {
            service.check_caller(&session, named.as_deref())?;
            let page = service
                .history(
                    me,
                    &room,
                    q_or_none("after").as_deref(),
                    q("limit").as_deref(),
                )
                .await?;
            let messages = page
                .messages
                .iter()
                .map(chat_ws::message_json)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    tracing::error!(error = %e, "a stored message did not encode");
                    Error::unavailable(format!("a stored message did not encode: {e}"))
                })?;
            Ok(reply::ok(json!({"messages": messages, "more": page.more})))
        }
        Route::CloseRoom => {
            let b: CloseRoomBody = parse(&body)?;
            service.check_caller(&session, named.as_deref())?;
            service.close_room(me, &b.chat_id).await?;
            Ok(reply::ok_empty())
        }
        Route::WsTicket => {
            // Any body, as `/reconnect`.
            service.check_caller(&session, named.as_deref())?;
            let ticket = service.ws_ticket(&session).await?;
            Ok(reply::ok(json!({
                "ticket": ticket.as_str(),
                "expires_in": chat_core::TICKET_SECS,
            })))
        }
        // `phone` here names the other user, not the caller: only `?phone=` names the caller.
        Route::Block => {
            let b: BlockBody = parse(&body)?;
            service.check_caller(&session, named.as_deref())?;
            service.block(me, &b.phone).await?;
            Ok(reply::ok_empty())
        }
        Route::Unblock => {
            let b: BlockBody = parse(&body)?;
            service.check_caller(&session, named.as_deref())?;
            service.unblock(me, &b.phone).await?;
            Ok(reply::ok_empty())
        }
        Route::Blocked => {
            service.check_caller(&session, named.as_deref())?;
            let blocked = service.blocked(me).await?;
            let blocked: Vec<&str> = blocked.iter().map(|p| p.as_str()).collect();
            Ok(reply::ok(json!({"blocked": blocked})))
        }
        // Not API routes: the caller never sends them here.
        Route::RegisterUser
        | Route::Index
        | Route::Chatroom(_)
        | Route::Static(_)
        | Route::Healthz
        | Route::Readyz
        | Route::Metrics
        | Route::OpenApi
        | Route::Ws => Err(HttpError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "bearer   abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn body_shapes() {
        assert!(parse::<CancelBody>(b"[1]").is_err());
        assert!(parse::<CancelBody>(b"not json").is_err());
        assert!(parse::<CancelBody>(b"{}").is_err());
        assert!(parse::<CancelBody>(br#"{"phone2": 5}"#).is_err());
        assert!(parse::<CancelBody>(b"\xff").is_err());
        let b: CancelBody = parse(br#"{"phone2": "x", "extra": [1]}"#).unwrap();
        assert_eq!(b.phone2, "x");
        let r: RegisterBody = parse(br#"{"phone": "1", "name": null}"#).unwrap();
        assert_eq!(r.name, None);
        assert!(parse::<RegisterBody>(br#"{"phone": "1", "name": 3}"#).is_err());
    }
}

#[cfg(test)]
#[path = "api_props.rs"]
mod props;
