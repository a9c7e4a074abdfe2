//! A deliberately small HTTP/1.1 client over a raw `TcpStream`: one request per connection
//! (`Connection: close`), so every byte the server sends is visible to the test, including
//! malformed answers a full client would hide.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response the client accepts.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// The most headers a response may have (the server sends about a dozen).
const MAX_HEADERS: usize = 64;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers with lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
    /// What was asked, for failure messages.
    pub request: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: response {} is not JSON ({e}): {:?}",
                self.request,
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status and `success: true`, returns the JSON body.
    #[track_caller]
    pub fn ok(&self) -> Value {
        let v = self.json();
        assert_eq!(
            (self.status, v["success"].as_bool()),
            (200, Some(true)),
            "{}: expected 200 success, got {} {}",
            self.request,
            self.status,
            v
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{}: content-type {:?}",
            self.request,
            self.header("content-type")
        );
        v
    }

    /// Asserts a failure with this status and `code` and the contract's failure shape; returns the
    /// JSON body.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> Value {
        let v = self.json();
        assert_eq!(
            (self.status, v["code"].as_str()),
            (status, Some(code)),
            "{}: expected {status} {code}, got {} {}",
            self.request,
            self.status,
            v
        );
        assert_eq!(v["success"], Value::Bool(false), "{}: {v}", self.request);
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: failure without an `error` sentence: {v}",
            self.request
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{}: failure content-type {:?}",
            self.request,
            self.header("content-type")
        );
        v
    }
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let what = format!("{method} {path}");
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        request_inner(addr, method, path, headers, body),
    )
    .await
    {
        Ok(Ok(mut r)) => {
            r.request = what;
            r
        }
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no complete response within {REQUEST_TIMEOUT:?}"),
    }
}

/// Sends `bytes` as they are (a whole request, however malformed) on a fresh connection and
/// reads one response.
pub async fn request_raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let what = format!(
        "raw request {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
    );
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, bytes)).await {
        Ok(Ok(mut r)) => {
            r.request = what;
            r
        }
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no complete response within {REQUEST_TIMEOUT:?}"),
    }
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    exchange(addr, &out).await
}

async fn exchange(addr: SocketAddr, out: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    // The server may answer (413) and close before reading all of a large body: a failed write is
    // not an error as long as a response arrives.
    let write_err = stream.write_all(out).await.err();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err("response too large".into());
                }
                if let Some(r) = parse_complete(&raw)? {
                    return Ok(r);
                }
            }
            Err(e) if !raw.is_empty() => {
                // A reset after the response started: keep what arrived.
                let _ = e;
                break;
            }
            Err(e) => {
                return Err(format!(
                    "read failed before any response: {e} (write error: {write_err:?})"
                ));
            }
        }
    }
    match parse_complete(&raw)? {
        Some(r) => Ok(r),
        None => parse_until_eof(&raw),
    }
}

/// A parsed response head: status, headers, offset of the body.
type Head = (u16, Vec<(String, String)>, usize);

/// Splits the head; `None` while it is incomplete.
fn parse_head(raw: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let start = match head.parse(raw) {
        Ok(httparse::Status::Complete(start)) => start,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(format!(
                "bad response head ({e}): {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ));
        }
    };
    let headers = head
        .headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| format!("header {} is not UTF-8", h.name))?;
            Ok((h.name.to_ascii_lowercase(), value.to_owned()))
        })
        .collect::<Result<_, String>>()?;
    let status = head.code.ok_or("response head without a status")?;
    Ok(Some((status, headers, start)))
}

/// A response whose length is known and fully read; `None` when more is needed.
fn parse_complete(raw: &[u8]) -> Result<Option<Response>, String> {
    let Some((status, headers, start)) = parse_head(raw)? else {
        return Ok(None);
    };
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body_raw = &raw[start..];
    if let Some(te) = get("transfer-encoding")
        && te.eq_ignore_ascii_case("chunked")
    {
        return Ok(dechunk(body_raw)?.map(|body| Response {
            status,
            headers: headers.clone(),
            body,
            request: String::new(),
        }));
    }
    if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        if body_raw.len() >= len {
            return Ok(Some(Response {
                status,
                headers,
                body: body_raw[..len].to_vec(),
                request: String::new(),
            }));
        }
        return Ok(None);
    }
    if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(Response {
            status,
            headers,
            body: Vec::new(),
            request: String::new(),
        }));
    }
    Ok(None)
}

/// A response delimited by the end of the connection.
fn parse_until_eof(raw: &[u8]) -> Result<Response, String> {
    let (status, headers, start) = parse_head(raw)?.ok_or_else(|| {
        format!(
            "connection closed before a complete response head: {:?}",
            String::from_utf8_lossy(raw)
        )
    })?;
    if headers
        .iter()
        .any(|(k, _)| k == "content-length" || k == "transfer-encoding")
    {
        return Err(format!(
            "connection closed before the whole body arrived ({} bytes)",
            raw.len() - start
        ));
    }
    Ok(Response {
        status,
        headers,
        body: raw[start..].to_vec(),
        request: String::new(),
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete(sized)) => sized,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::InvalidChunkSize) => {
                return Err(format!(
                    "bad chunk size: {:?}",
                    String::from_utf8_lossy(&raw[..raw.len().min(20)])
                ));
            }
        };
        raw = &raw[start..];
        if size == 0 {
            return Ok(Some(body));
        }
        let size = usize::try_from(size).map_err(|_| format!("chunk of {size} bytes"))?;
        if raw.len() < size.saturating_add(2) {
            return Ok(None);
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let r = parse_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi")
            .expect("parses")
            .expect("complete");
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-a")),
            (200, &b"hi"[..], Some("b"))
        );
        assert!(
            parse_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi")
                .expect("parses")
                .is_none()
        );
        let r = parse_complete(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n",
        )
        .expect("parses")
        .expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"hi!!!"[..]));
        // A chunk extension, and a chunk not all there yet.
        let r = parse_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\n\r\n",
        )
        .expect("parses")
        .expect("complete");
        assert_eq!(r.body.as_slice(), &b"hi"[..]);
        assert!(
            parse_complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhi")
                .expect("parses")
                .is_none()
        );
    }

    #[test]
    fn a_head_arriving_in_parts_waits_and_a_malformed_one_fails() {
        assert!(
            parse_complete(b"HTTP/1.1 200 OK\r\nContent-Le")
                .expect("parses")
                .is_none()
        );
        assert!(parse_complete(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_complete(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse_complete(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse_until_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi").is_err());
    }
}
