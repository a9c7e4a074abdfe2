//! The REST calls the bench needs, as the contract defines them, and the phones it uses.

use std::hash::{BuildHasher, Hasher};

use serde::Deserialize;

use crate::Result;
use crate::http::{HttpClient, Response};

/// A prefix unique to this run, so repeated runs against one server never collide with a
/// session that is still alive (409 `phone_in_use`). Six random digits from the standard
/// library's per-process random hasher keys (seeded by the OS).
pub fn run_prefix() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % 1_000_000) as u32
}

/// Phone number `index` of a run: `+` then 15 digits (6 of prefix, 9 of index), inside the
/// contract's 7 to 15 digits.
pub fn phone(prefix: u32, index: usize) -> String {
    format!("+{prefix:06}{index:09}")
}

#[derive(Deserialize)]
struct SessionCreated {
    token: String,
}

#[derive(Deserialize)]
struct Accepted {
    message: AcceptedMessage,
}

#[derive(Deserialize)]
struct AcceptedMessage {
    chat_id: String,
}

/// `POST /register_user`; returns the session token.
pub async fn register(client: &mut HttpClient, phone: &str) -> Result<String> {
    let body = format!(r#"{{"phone":"{phone}"}}"#);
    let resp = client
        .request("POST", "/register_user", None, Some(body.as_bytes()))
        .await?;
    let r: SessionCreated = ok_json("register_user", &resp)?;
    Ok(r.token)
}

/// `POST /send_request` from the token's user to `to`.
pub async fn send_request(client: &mut HttpClient, token: &str, to: &str) -> Result<()> {
    let body = format!(r#"{{"phone2":"{to}"}}"#);
    let resp = client
        .request("POST", "/send_request", Some(token), Some(body.as_bytes()))
        .await?;
    let _: serde::de::IgnoredAny = ok_json("send_request", &resp)?;
    Ok(())
}

/// `POST /respond_request` accepting `from`'s request; returns the room id.
pub async fn accept(client: &mut HttpClient, token: &str, from: &str) -> Result<String> {
    let body = format!(r#"{{"phone1":"{from}","action":"accept"}}"#);
    let resp = client
        .request(
            "POST",
            "/respond_request",
            Some(token),
            Some(body.as_bytes()),
        )
        .await?;
    let r: Accepted = ok_json("respond_request", &resp)?;
    Ok(r.message.chat_id)
}

/// The body of a 200 answer, or an error that says what the server answered and, for the
/// limits an operator sets, which flag to raise.
fn ok_json<'a, T: Deserialize<'a>>(what: &str, resp: &'a Response) -> Result<T> {
    if resp.status == 200 {
        return serde_json::from_slice(&resp.body).map_err(|e| {
            format!(
                "{what}: unexpected answer ({e}): {}",
                String::from_utf8_lossy(&resp.body)
            )
            .into()
        });
    }
    let hint = if resp.status == 429 {
        " (start the server with a higher --registrations-per-min)"
    } else {
        ""
    };
    Err(format!(
        "{what}: HTTP {}{hint}: {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_valid_and_distinct() {
        let p = phone(123, 7);
        assert_eq!(p, "+000123000000007");
        assert_eq!(p.len(), 16);
        assert_ne!(phone(1, 1), phone(1, 2));
        assert!(run_prefix() < 1_000_000);
    }
}
