//! A tiny TCP forwarder standing in for a load balancer: a browser keeps one origin while the
//! `chat-server` node behind it is restarted (on another port). While the node is down, new
//! connections are accepted and closed at once, as a load balancer with no healthy backend
//! would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection on `addr` to the current target.
pub struct Proxy {
    /// Where browsers connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let target = Arc::new(Mutex::new(target));
        let to = Arc::clone(&target);
        let accept = tokio::spawn(async move {
            // Connection tasks end when either side closes; they are aborted with the proxy
            // (the JoinSet drops with this task).
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let upstream = *to.lock().unwrap_or_else(|e| e.into_inner());
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Proxy {
            addr,
            target,
            accept,
        }
    }

    /// `http://ip:port` of the proxy.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends new connections to `target` from now on.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
