//! The test helper itself: a private server answers, dies on `kill`, and keeps AOF data across
//! `restart`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chat_store_redis::test_server::RedisServer;

fn command(port: u16, cmd: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(cmd.as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn persistent_server_keeps_data_across_kill_and_restart() {
    let server = RedisServer::start_persistent();
    assert_ne!(server.port(), 6379);
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert_eq!(command(server.port(), "SET k v\r\n"), "+OK\r\n");
    server.kill();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
    server.restart();
    assert_eq!(command(server.port(), "GET k\r\n"), "$1\r\nv\r\n");
}

#[test]
fn plain_server_is_private_and_dies_on_drop() {
    let server = RedisServer::start();
    let port = server.port();
    assert_eq!(command(port, "PING\r\n"), "+PONG\r\n");
    assert_eq!(command(port, "DBSIZE\r\n"), ":0\r\n");
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
