//! The server under test: its address, checked to be on this machine, and the loopback source
//! addresses the client side spreads its connections over.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::Result;

/// Where the server listens, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's socket address (loopback).
    pub addr: SocketAddr,
    /// `host:port` as given, for `Host` headers and the WebSocket URL.
    pub authority: String,
}

impl Target {
    /// Parses `http://host:port[/]` and resolves it; refuses anything that is not loopback,
    /// because this tool generates load and must never aim it at another machine.
    pub async fn resolve(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url must start with http:// (got {url:?})"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(
                format!("--url must be http://host:port with no path (got {url:?})").into(),
            );
        }
        let addr = resolve_loopback(authority, 80).await?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
        })
    }
}

/// Resolves `host[:port]` and insists on a loopback address.
pub async fn resolve_loopback(authority: &str, default_port: u16) -> Result<SocketAddr> {
    // `host:` means the default port, as in URLs.
    let authority = authority.strip_suffix(':').unwrap_or(authority);
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("cannot resolve {with_port}: {e}"))?
        .collect();
    let first = addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{with_port} resolves to no address"))?;
    if addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "{with_port} is not a loopback address: chat-bench only drives servers on this machine"
        )
        .into());
    }
    Ok(first)
}

/// The client-side source address of connection `index` when each address carries at most
/// `per_addr` connections: 127.0.0.2, 127.0.0.3, ... (all of 127/8 is loopback on Linux).
/// Spreading gives every address its own ephemeral port range and stays under the server's
/// `--max-connections-per-address`. Addresses ending in .0 or .255 are skipped.
pub fn source_addr(index: usize, per_addr: usize) -> IpAddr {
    let slot = (index / per_addr.max(1)) as u32;
    // 254 usable last octets per /24 (1..=254); start at 127.0.0.2.
    let usable = slot + 1;
    let third = usable / 254;
    let fourth = usable % 254 + 1;
    let second = third / 256;
    let third = third % 256;
    IpAddr::V4(Ipv4Addr::new(
        127,
        (second % 256) as u8,
        third as u8,
        fourth as u8,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that unwraps fails loudly, as it should
mod tests {
    use super::*;

    #[test]
    fn source_addresses_skip_network_and_broadcast_octets() {
        assert_eq!(source_addr(0, 10), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_addr(9, 10), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_addr(10, 10), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(
            source_addr(252, 1),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 254))
        );
        assert_eq!(source_addr(253, 1), IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)));
        for i in 0..100_000 {
            let IpAddr::V4(v4) = source_addr(i, 1) else {
                panic!("v4 only")
            };
            assert!(v4.is_loopback());
            assert!(v4.octets()[3] != 0 && v4.octets()[3] != 255);
        }
    }

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        let t = Target::resolve("http://127.0.0.1:5000/").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:5000");
        assert!(Target::resolve("http://10.1.2.3:5000").await.is_err());
        assert!(Target::resolve("https://127.0.0.1:5000").await.is_err());
        assert!(Target::resolve("http://127.0.0.1:5000/x").await.is_err());
        let r = resolve_loopback("127.0.0.1:", 6379).await.unwrap();
        assert_eq!(r, "127.0.0.1:6379".parse().unwrap());
        let r = resolve_loopback("localhost:7000", 6379).await.unwrap();
        assert_eq!(r.port(), 7000);
    }
}
