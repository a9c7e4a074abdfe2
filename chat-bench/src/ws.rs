//! The WebSocket side of the contract, as a client: connecting with a token from a chosen
//! source address, waiting for `connection_status`, joining a room, and parsing server frames
//! in two steps (envelope, then the event's data) without copying.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Result;
use crate::target::Target;

pub type Ws = WebSocketStream<TcpStream>;

/// A server frame: `{"event", "data"?, "ack"?}`. `data` stays raw until the event is known.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(default)]
    pub ack: Option<u64>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// The fields of a `<message>` the bench reads.
#[derive(Debug, Deserialize)]
pub struct MessageData<'a> {
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// The data of an `error` event.
#[derive(Debug, Deserialize)]
pub struct ErrorData<'a> {
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
}

/// Socket buffers. The defaults allocate 128 KiB per direction per socket, which at tens of
/// thousands of sockets is gigabytes; chat frames are small.
pub fn config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Opens `/ws` with the bearer token and waits for `connection_status`; all within `timeout`.
pub async fn connect(
    target: &Target,
    token: &str,
    source: Option<IpAddr>,
    read_buffer: usize,
    timeout: Duration,
) -> Result<Ws> {
    let fut = async {
        let stream = crate::http::connect(target.addr, source).await?;
        let mut request = format!("ws://{}/ws", target.authority).into_client_request()?;
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config(read_buffer)))
                .await?;
        loop {
            let text = next_text(&mut ws).await?;
            let frame: Incoming = serde_json::from_str(&text)?;
            if frame.event == "connection_status" {
                return Ok::<Ws, crate::Error>(ws);
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|e| format!("WebSocket connect: {e}").into()),
        Err(_) => Err(format!("WebSocket connect: no connection_status within {timeout:?}").into()),
    }
}

/// Sends `join_room` with an ack and waits for its `room_history`; within `timeout`.
pub async fn join(ws: &mut Ws, room: &str, timeout: Duration) -> Result<()> {
    const JOIN_ACK: u64 = 0;
    let fut = async {
        let frame =
            format!(r#"{{"event":"join_room","data":{{"room":"{room}"}},"ack":{JOIN_ACK}}}"#);
        ws.send(Message::text(frame)).await?;
        loop {
            let text = next_text(ws).await?;
            let frame: Incoming = serde_json::from_str(&text)?;
            match (frame.event.as_ref(), frame.ack) {
                ("room_history", Some(JOIN_ACK)) => return Ok::<(), crate::Error>(()),
                ("error", Some(JOIN_ACK)) => {
                    return Err(format!(
                        "join_room refused: {}",
                        frame.data.map(|d| d.get()).unwrap_or("")
                    )
                    .into());
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|e| format!("join_room: {e}").into()),
        Err(_) => Err(format!("join_room: no room_history within {timeout:?}").into()),
    }
}

/// The next text frame; control frames are answered by tungstenite itself.
async fn next_text(ws: &mut Ws) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(c))) => {
                return Err(format!("closed by the server: {c:?}").into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed by the server".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_in_two_steps() {
        let text = r#"{"event":"receive_message","data":{"id":"1-0","room":"r","sender":"+1","message":"0:1:2:xx","timestamp":"t","client_id":null}}"#;
        let f: Incoming = serde_json::from_str(text).unwrap();
        assert_eq!(f.event, "receive_message");
        assert_eq!(f.ack, None);
        let m: MessageData = serde_json::from_str(f.data.unwrap().get()).unwrap();
        assert_eq!(m.message, "0:1:2:xx");

        let text =
            r#"{"event":"error","ack":7,"data":{"code":"rate_limited","message":"slow down"}}"#;
        let f: Incoming = serde_json::from_str(text).unwrap();
        assert_eq!(f.ack, Some(7));
        let e: ErrorData = serde_json::from_str(f.data.unwrap().get()).unwrap();
        assert_eq!(e.code.as_deref(), Some("rate_limited"));

        let f: Incoming = serde_json::from_str(r#"{"event":"pong","data":{}}"#).unwrap();
        assert_eq!(f.event, "pong");
    }
}
