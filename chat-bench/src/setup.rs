//! `setup`: how fast users can arrive. `--count N` pairs: first 2N registrations, then N
//! request+accept exchanges (`send_request` by the first member, `respond_request` accept by
//! the second), each phase over `--concurrency` keep-alive connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Args;
use hdrhistogram::Histogram;

use crate::report::{Progress, Report, histogram};
use crate::stats::{Observers, cpu_delta, memory_delta, per, per_signed};
use crate::target::Target;
use crate::{CommonArgs, Result, api, work};

#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent HTTP connections (one request in flight on each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Pairs: 2N registrations, then N request+accept.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
}

pub async fn run(args: SetupArgs) -> Result<()> {
    if args.count == 0 || args.concurrency == 0 {
        return Err("--count and --concurrency must be at least 1".into());
    }
    let target = Target::resolve(&args.common.url).await?;
    let observers = Observers::new(&args.common).await?;
    let mut common = args.common.clone();
    common.http_concurrency = args.concurrency;
    let timeout = common.setup_timeout();
    let n = args.count;

    let prefix = api::run_prefix();
    let phones: Arc<Vec<String>> = Arc::new((0..2 * n).map(|u| api::phone(prefix, u)).collect());
    let registered = Arc::new(AtomicUsize::new(0));
    let paired = Arc::new(AtomicUsize::new(0));
    let _progress = {
        let (r, p) = (registered.clone(), paired.clone());
        Progress::start("setup", move || {
            format!(
                "registered {}/{}  request+accept {}/{n}",
                r.load(Ordering::Relaxed),
                2 * n,
                p.load(Ordering::Relaxed)
            )
        })
    };
    let workers = || crate::users::http_workers(&target, &common);

    let s0 = observers.sample().await?;
    let t0 = Instant::now();
    let ph = phones.clone();
    let tokens = tokio::time::timeout(
        timeout,
        work::run(2 * n, workers(), registered, move |mut w, u| {
            let ph = ph.clone();
            async move {
                let t = Instant::now();
                let r = api::register(&mut w, &ph[u]).await;
                let us = t.elapsed().as_micros() as u64;
                (w, r.map(|tok| (tok, us)))
            }
        }),
    )
    .await
    .map_err(|_| "registrations did not finish within --setup-timeout")??;
    let register_secs = t0.elapsed().as_secs_f64();
    let s1 = observers.sample().await?;
    let reg_hist = to_histogram(tokens.iter().map(|(_, us)| *us));
    let tokens: Arc<Vec<String>> = Arc::new(tokens.into_iter().map(|(t, _)| t).collect());

    let (ph, tk) = (phones.clone(), tokens.clone());
    let t1 = Instant::now();
    let pair_lat = tokio::time::timeout(
        timeout,
        work::run(n, workers(), paired, move |mut w, p| {
            let (ph, tk) = (ph.clone(), tk.clone());
            async move {
                let t = Instant::now();
                let r = async {
                    api::send_request(&mut w, &tk[2 * p], &ph[2 * p + 1]).await?;
                    api::accept(&mut w, &tk[2 * p + 1], &ph[2 * p]).await
                }
                .await;
                let us = t.elapsed().as_micros() as u64;
                (w, r.map(|_| us))
            }
        }),
    )
    .await
    .map_err(|_| "request+accept did not finish within --setup-timeout")??;
    let pair_secs = t1.elapsed().as_secs_f64();
    let s2 = observers.sample().await?;

    let pair_hist = to_histogram(pair_lat.into_iter());

    let (reg_cpu, reg_redis) = cpu_delta(&s0, &s1);
    let (pair_cpu, pair_redis) = cpu_delta(&s1, &s2);
    let mut r = Report::new("setup");
    r.add("concurrency", args.concurrency, "keep-alive connections")
        .add("registrations", 2 * n, "POST /register_user")
        .num(
            "registrations_per_sec",
            Some(2.0 * n as f64 / register_secs),
            "/s",
        )
        .latency(
            [
                "register_p50_us",
                "register_p90_us",
                "register_p99_us",
                "register_max_us",
                "register_mean_us",
            ],
            &reg_hist,
        )
        .add(
            "request_accepts",
            n,
            "send_request + respond_request accept",
        )
        .num("request_accepts_per_sec", Some(n as f64 / pair_secs), "/s")
        .latency(
            [
                "request_accept_p50_us",
                "request_accept_p90_us",
                "request_accept_p99_us",
                "request_accept_max_us",
                "request_accept_mean_us",
            ],
            &pair_hist,
        )
        .num(
            "server_cpu_us_per_registration",
            per(reg_cpu, 2.0 * n as f64),
            "µs",
        )
        .num(
            "server_cpu_us_per_request_accept",
            per(pair_cpu, n as f64),
            "µs",
        )
        .num(
            "redis_cpu_us_per_registration",
            per(reg_redis, 2.0 * n as f64),
            "µs",
        )
        .num(
            "redis_cpu_us_per_request_accept",
            per(pair_redis, n as f64),
            "µs",
        )
        .add(
            "server_rss_kib",
            s2.server.map(|s| s.rss_kib),
            "KiB at the end",
        )
        .add(
            "redis_used_memory_before",
            s0.redis_used_memory,
            "bytes (INFO memory used_memory)",
        )
        .num(
            "redis_bytes_per_registration",
            per_signed(memory_delta(&s0, &s1), 2.0 * n as f64),
            "used_memory growth per registration",
        )
        .num(
            "redis_bytes_per_request_accept",
            per_signed(memory_delta(&s1, &s2), n as f64),
            "used_memory growth per request+accept (a room)",
        );
    r.print(args.common.json);
    Ok(())
}

fn to_histogram(us: impl Iterator<Item = u64>) -> Histogram<u64> {
    let mut h = histogram();
    for v in us {
        h.saturating_record(v.max(1));
    }
    h
}
