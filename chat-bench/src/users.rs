//! The population of a run, built through the contract: users register, pair up (user `2p`
//! requests user `2p + 1`, who accepts), and each connects a WebSocket that joins the pair's
//! room. Every step is bounded by `--connect-timeout` and the whole by `--setup-timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::http::HttpClient;
use crate::report::Progress;
use crate::stats::{Observers, Window};
use crate::target::{Target, source_addr};
use crate::ws::Ws;
use crate::{CommonArgs, Result, api, work};

/// Joined sockets and who they belong to. `sockets[u]` is user `u`'s; `u ^ 1` is its peer.
#[derive(Debug)]
pub struct Population {
    /// Room of pair `p` (users `2p` and `2p + 1`).
    pub rooms: Vec<String>,
    pub sockets: Vec<Ws>,
    /// Seconds spent registering, pairing and connecting.
    pub setup_secs: [f64; 3],
    /// The observers' readings after pairing, before the first socket connects.
    pub before_connect: Window,
}

/// How the population is built.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Users (even).
    pub users: usize,
    /// Sockets per client source address (127.0.0.2, ...); keep under the server's
    /// `--max-connections-per-address`.
    pub per_addr: usize,
    /// WebSocket read buffer per socket.
    pub read_buffer: usize,
    /// WebSocket connects in flight at once.
    pub connect_concurrency: usize,
}

/// HTTP workers, each on its own keep-alive connection from its own source address.
pub fn http_workers(target: &Target, common: &CommonArgs) -> Vec<HttpClient> {
    (0..common.http_concurrency.max(1))
        .map(|w| {
            HttpClient::new(
                target.addr,
                &target.authority,
                Some(source_addr(w, 1)),
                common.connect_timeout(),
            )
        })
        .collect()
}

pub async fn build(
    target: &Target,
    common: &CommonArgs,
    plan: Plan,
    observers: &Observers,
) -> Result<Population> {
    let timeout = common.setup_timeout();
    match tokio::time::timeout(timeout, build_inner(target, common, plan, observers)).await {
        Ok(r) => r,
        Err(_) => Err(format!("setup did not finish within --setup-timeout {timeout:?}").into()),
    }
}

async fn build_inner(
    target: &Target,
    common: &CommonArgs,
    plan: Plan,
    observers: &Observers,
) -> Result<Population> {
    let users = plan.users;
    let prefix = api::run_prefix();
    let phones: Arc<Vec<String>> = Arc::new((0..users).map(|u| api::phone(prefix, u)).collect());
    let registered = Arc::new(AtomicUsize::new(0));
    let paired = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let _progress = {
        let (r, p, c) = (registered.clone(), paired.clone(), connected.clone());
        Progress::start("setup", move || {
            format!(
                "registered {}/{users}  paired {}/{}  joined {}/{users}",
                r.load(Ordering::Relaxed),
                p.load(Ordering::Relaxed),
                users / 2,
                c.load(Ordering::Relaxed)
            )
        })
    };

    let t0 = Instant::now();
    let ph = phones.clone();
    let tokens: Arc<Vec<String>> = Arc::new(
        work::run(
            users,
            http_workers(target, common),
            registered,
            move |mut c, u| {
                let ph = ph.clone();
                async move {
                    let r = api::register(&mut c, &ph[u]).await;
                    (c, r)
                }
            },
        )
        .await?,
    );
    let t1 = Instant::now();

    let (ph, tk) = (phones.clone(), tokens.clone());
    let rooms = work::run(
        users / 2,
        http_workers(target, common),
        paired,
        move |mut c, p| {
            let (ph, tk) = (ph.clone(), tk.clone());
            async move {
                let r = async {
                    api::send_request(&mut c, &tk[2 * p], &ph[2 * p + 1]).await?;
                    api::accept(&mut c, &tk[2 * p + 1], &ph[2 * p]).await
                }
                .await;
                (c, r)
            }
        },
    )
    .await?;
    let t2 = Instant::now();
    let before_connect = observers.sample().await?;

    let rooms = Arc::new(rooms);
    let (tk, rm, tg) = (tokens.clone(), rooms.clone(), target.clone());
    let timeout = common.connect_timeout();
    let sockets = work::run(
        users,
        vec![(); plan.connect_concurrency.max(1)],
        connected,
        move |(), u| {
            let (tk, rm, tg) = (tk.clone(), rm.clone(), tg.clone());
            async move {
                let r = async {
                    let source = source_addr(u, plan.per_addr);
                    let mut ws =
                        crate::ws::connect(&tg, &tk[u], Some(source), plan.read_buffer, timeout)
                            .await
                            .map_err(|e| format!("socket {u} from {source}: {e}"))?;
                    crate::ws::join(&mut ws, &rm[u / 2], timeout).await?;
                    Ok(ws)
                }
                .await;
                ((), r)
            }
        },
    )
    .await?;
    let t3 = Instant::now();

    Ok(Population {
        rooms: rooms.to_vec(),
        sockets,
        setup_secs: [
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
        ],
        before_connect,
    })
}

/// Raises this process's open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("chat-bench: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(0)
        }
    }
}
