//! A minimal HTTP/1.1 keep-alive client for the handful of JSON requests the bench makes.
//!
//! Hand-written on purpose: one connection per worker, reused for every request, no pool and no
//! extra allocations, so the `setup` figures measure the server rather than a client stack.
//! It understands what a conforming server answers: `Content-Length` or chunked bodies, and
//! `Connection: close`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::Result;

/// Largest response body accepted; the API's answers are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// Largest status or header line accepted.
const MAX_LINE: usize = 8 << 10;

/// One HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A keep-alive connection to the server, reopened when the server closes it.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    source: Option<IpAddr>,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Scratch buffer for the request head and body, reused across requests.
    buf: Vec<u8>,
    line: String,
}

impl HttpClient {
    /// A client for `addr` (sent as `Host: host`), connecting from `source` when given; each
    /// request (connect included) must complete within `timeout`.
    pub fn new(addr: SocketAddr, host: &str, source: Option<IpAddr>, timeout: Duration) -> Self {
        HttpClient {
            addr,
            host: host.to_string(),
            source,
            timeout,
            conn: None,
            buf: Vec::with_capacity(512),
            line: String::with_capacity(256),
        }
    }

    /// Sends one request and reads the whole answer. A request that fails on a reused
    /// connection before any answer byte arrived (the server closed it while idle) is retried
    /// once on a fresh connection; nothing was processed in that case.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.request_inner(method, path, token, body)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(format!("{method} {path}: no answer within {timeout:?}").into())
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Response> {
        self.buf.clear();
        let body = body.unwrap_or(b"");
        self.buf.extend_from_slice(method.as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(path.as_bytes());
        self.buf.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.buf.extend_from_slice(self.host.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        if let Some(token) = token {
            self.buf.extend_from_slice(b"Authorization: Bearer ");
            self.buf.extend_from_slice(token.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        }
        if method != "GET" {
            self.buf
                .extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            self.buf
                .extend_from_slice(body.len().to_string().as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        }
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(body);

        let reused = self.conn.is_some();
        match self.exchange().await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) if reused => {
                // Closed while idle: retry once on a fresh connection.
                self.conn = None;
                match self.exchange().await? {
                    Some(resp) => Ok(resp),
                    None => {
                        Err(format!("{method} {path}: connection closed without an answer").into())
                    }
                }
            }
            Ok(None) => Err(format!("{method} {path}: connection closed without an answer").into()),
            Err(e) => {
                self.conn = None;
                Err(format!("{method} {path}: {e}").into())
            }
        }
    }

    /// Writes `self.buf` and reads one answer; `None` when the connection was closed before
    /// any byte of the answer.
    async fn exchange(&mut self) -> Result<Option<Response>> {
        if self.conn.is_none() {
            let stream = connect(self.addr, self.source).await?;
            self.conn = Some(BufReader::with_capacity(4096, stream));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        if let Err(e) = conn.get_mut().write_all(&self.buf).await {
            self.conn = None;
            return if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) {
                Ok(None)
            } else {
                Err(e.into())
            };
        }
        self.line.clear();
        let n = match read_line(conn, &mut self.line).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            self.conn = None;
            return Ok(None);
        }
        let status = parse_status(&self.line)?;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            self.line.clear();
            if read_line(conn, &mut self.line).await? == 0 {
                return Err("connection closed inside the headers".into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(format!("malformed header line {header:?}").into());
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let body = if chunked {
            read_chunked(conn, &mut self.line).await?
        } else if let Some(len) = content_length {
            if len > MAX_BODY {
                return Err(
                    format!("response body of {len} bytes is over the {MAX_BODY} limit").into(),
                );
            }
            let mut body = vec![0; len];
            conn.read_exact(&mut body).await?;
            body
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            // Body delimited by the end of the connection.
            let mut body = Vec::new();
            conn.take(MAX_BODY as u64).read_to_end(&mut body).await?;
            close = true;
            body
        };
        if close {
            self.conn = None;
        }
        Ok(Some(Response { status, body }))
    }
}

/// Opens a TCP connection from `source` (when given) with Nagle off: the bench measures
/// latency, and requests are written in one piece anyway.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn read_line(conn: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<usize> {
    let n = (&mut *conn).take(MAX_LINE as u64).read_line(line).await?;
    if n == MAX_LINE && !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "header line too long",
        ));
    }
    Ok(n)
}

fn parse_status(line: &str) -> Result<u16> {
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| format!("bad status line {line:?}").into()),
        _ => Err(format!("bad status line {line:?}").into()),
    }
}

async fn read_chunked(conn: &mut BufReader<TcpStream>, line: &mut String) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        line.clear();
        if read_line(conn, line).await? == 0 {
            return Err("connection closed inside a chunked body".into());
        }
        let size_text = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if read_line(conn, line).await? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(format!("response body over the {MAX_BODY} limit").into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A scripted server: answers each request (read up to the blank line plus the body) with
    /// the next canned response, then closes when the script ends.
    async fn scripted(responses: Vec<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = BufReader::new(stream);
            for resp in responses {
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    conn.read_line(&mut line).await.unwrap();
                    if line.trim_end().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                conn.read_exact(&mut body).await.unwrap();
                conn.get_mut().write_all(resp.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let addr = scripted(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let mut c = HttpClient::new(addr, "x", None, Duration::from_secs(5));
        let r = c
            .request("POST", "/a", Some("t"), Some(b"{\"k\":1}"))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = c.request("GET", "/b", None, None).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (409, &b"abcde"[..]));
    }

    #[tokio::test]
    async fn a_request_to_a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let mut c = HttpClient::new(addr, "x", None, Duration::from_millis(200));
        let err = c.request("GET", "/", None, None).await.unwrap_err();
        assert!(err.to_string().contains("no answer"), "{err}");
    }
}
