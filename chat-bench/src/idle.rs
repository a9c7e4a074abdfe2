//! `idle`: N authenticated sockets, each joined to its pair's room, that send nothing for
//! `--duration`. Measures what an idle user costs the server: RSS per socket (sessions, rooms
//! and socket state included, since all of it exists per connected user) and CPU per socket
//! per second (the server's pings and their pongs included; tungstenite answers pings while
//! the socket is read).
//!
//! The client side spreads over 127.0.0.2, 127.0.0.3, ... (`--per-addr` sockets each) so that
//! no address runs out of ephemeral ports or reaches the server's
//! `--max-connections-per-address`. Registrations also come from several addresses, but the
//! server's `--registrations-per-min` still has to be raised to about the socket count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Progress, Report};
use crate::stats::{Observers, cpu_delta, memory_delta, per, per_signed};
use crate::target::Target;
use crate::users::{Plan, raise_nofile};
use crate::{CommonArgs, Result, secs};

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Sockets to open (rounded up to even: users come in pairs).
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// Seconds the sockets stay idle while CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Sockets per client source address (under the server's --max-connections-per-address).
    #[arg(long, default_value_t = 900)]
    pub per_addr: usize,
    /// Seconds to wait after the last socket joined before reading the server's RSS.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
}

pub async fn run(args: IdleArgs) -> Result<()> {
    if args.sockets == 0 {
        return Err("--sockets must be at least 1".into());
    }
    let users = args.sockets.div_ceil(2) * 2;
    let nofile = raise_nofile();
    if nofile < users as u64 + 64 {
        eprintln!(
            "chat-bench: warning: open-file limit {nofile} is below {users} sockets; raise the hard limit (ulimit -Hn)"
        );
    }
    let target = Target::resolve(&args.common.url).await?;
    let observers = Observers::new(&args.common).await?;
    let before = observers.sample().await?;

    let plan = Plan {
        users,
        per_addr: args.per_addr,
        read_buffer: 2 << 10,
        connect_concurrency: args.common.connect_concurrency,
    };
    let pop = crate::users::build(&target, &args.common, plan, &observers).await?;

    let closed = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = tokio::task::JoinSet::new();
    for ws in pop.sockets {
        let (closed, pings, mut stop) = (closed.clone(), pings.clone(), stop_rx.clone());
        holders.spawn(async move {
            let mut stream = ws;
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    msg = stream.next() => msg,
                };
                match msg {
                    Some(Ok(Message::Ping(_))) => {
                        pings.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => {}
                }
            }
        });
    }
    tokio::time::sleep(secs(args.settle)).await;

    let _progress = {
        let (closed, pings) = (closed.clone(), pings.clone());
        Progress::start("idle", move || {
            format!(
                "open {}  server pings seen {}",
                users as u64 - closed.load(Ordering::Relaxed),
                pings.load(Ordering::Relaxed)
            )
        })
    };
    let start = observers.sample().await?;
    let started = tokio::time::Instant::now();
    tokio::time::sleep(secs(args.duration)).await;
    let end = observers.sample().await?;
    let idle_secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    // Holders return at once on stop; bound the wait anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while holders.join_next().await.is_some() {}
    })
    .await;

    let (server_cpu, redis_cpu) = cpu_delta(&start, &end);
    let rss = |w: &crate::stats::Window| w.server.map(|s| s.rss_kib);
    let rss_growth_bytes = match (rss(&before), rss(&start)) {
        (Some(b), Some(w)) => Some(w.saturating_sub(b) * 1024),
        _ => None,
    };
    let socket_secs = users as f64 * idle_secs;
    let mut r = Report::new("idle");
    r.add("sockets", users, "joined sockets held open")
        .add(
            "source_addrs",
            users.div_ceil(args.per_addr.max(1)),
            "client addresses (127.0.0.2..)",
        )
        .num("setup_register_s", Some(pop.setup_secs[0]), "s")
        .num("setup_pair_s", Some(pop.setup_secs[1]), "s")
        .num("setup_connect_s", Some(pop.setup_secs[2]), "s")
        .num("idle_s", Some(idle_secs), "s measured")
        .add(
            "sockets_closed",
            closed.load(Ordering::Relaxed),
            "closed by the server or failed",
        )
        .add(
            "server_pings_seen",
            pings.load(Ordering::Relaxed),
            "WebSocket pings received",
        )
        .add("server_rss_before_kib", rss(&before), "KiB before the run")
        .add(
            "server_rss_with_kib",
            rss(&start),
            "KiB with the sockets open",
        )
        .add(
            "server_rss_end_kib",
            rss(&end),
            "KiB at the end of the idle period",
        )
        .num(
            "server_rss_per_socket_bytes",
            per(rss_growth_bytes, users as f64),
            "bytes per socket",
        )
        .add(
            "server_cpu_us",
            server_cpu,
            "server CPU over the idle period",
        )
        .num(
            "server_cpu_us_per_socket_sec",
            per(server_cpu, socket_secs),
            "µs per socket-second",
        )
        .add("redis_cpu_us", redis_cpu, "Redis CPU over the idle period")
        .num(
            "redis_cpu_us_per_socket_sec",
            per(redis_cpu, socket_secs),
            "µs per socket-second",
        )
        .num(
            "redis_bytes_per_socket",
            per_signed(memory_delta(&pop.before_connect, &start), users as f64),
            "used_memory growth per socket connected and joined",
        )
        .num(
            "redis_bytes_per_online_user",
            per_signed(memory_delta(&before, &start), users as f64),
            "used_memory growth per user: registration, half a room, socket",
        )
        .add("client_nofile", nofile, "this process's open-file limit");
    r.print(args.common.json);
    Ok(())
}
