//! `chat`: paired users exchange messages over their rooms.
//!
//! Each message text is `<sender>:<seq>:<send_ns>:` padded with `x` to `--msg-bytes`, where
//! `send_ns` is nanoseconds on this process's monotonic clock. The peer's socket measures the
//! latency when `receive_message` arrives and checks the sender's sequence numbers (duplicates,
//! order); the sender's own socket counts its echo apart and records the `ack`.
//!
//! Load: `--rate R` is an open loop. R messages/s are spread evenly over the senders, and each
//! message is stamped with its *scheduled* send time, so a stall (server or client) shows up
//! as latency instead of quietly lowering the rate (no coordinated omission). The schedule is
//! kept by a pacer thread of its own ([`pace`]): tokio's timer wheel works in 1 ms ticks and
//! rounds deadlines up, which would add up to a millisecond and more of the generator's own
//! lateness to every latency measured from the schedule. `--window W` is a
//! closed loop: each sender keeps W messages in flight, and a message completes when the peer
//! receives it (or the server refuses it). Both members of every pair send, unless `--one-way`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Progress, Report, histogram};
use crate::stats::{
    Observers, ProcReader, ProcSample, Window, cpu_delta, memory_delta, per, per_signed,
};
use crate::target::Target;
use crate::users::{Plan, Population, raise_nofile};
use crate::ws::{ErrorData, Incoming, MessageData, Ws};
use crate::{CommonArgs, Result, secs};

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Pairs of users; each pair shares one room.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Seconds of sending (the measurement window).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Message text length in bytes (at least the header, about 30 bytes).
    #[arg(long, default_value_t = 64)]
    pub msg_bytes: usize,
    /// Open loop: total messages per second over all senders.
    #[arg(long, conflicts_with = "window")]
    pub rate: Option<f64>,
    /// Closed loop: messages in flight per sender.
    #[arg(long)]
    pub window: Option<usize>,
    /// Only the first member of each pair sends (default: both members send).
    #[arg(long)]
    pub one_way: bool,
    /// After the sending stops, wait at most this long (seconds) for outstanding deliveries
    /// before counting what is missing as lost.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Sockets per client source address.
    #[arg(long, default_value_t = 900)]
    pub per_addr: usize,
}

#[derive(Debug, Clone, Copy)]
enum Load {
    /// Messages per second over all senders.
    Open {
        rate: f64,
    },
    Closed {
        window: usize,
    },
}

impl Load {
    /// The load of `--rate R` or `--window W`: exactly one of them.
    fn from_args(args: &ChatArgs) -> Result<Load> {
        match (args.rate, args.window) {
            (Some(r), None) if r > 0.0 && r.is_finite() => Ok(Load::Open { rate: r }),
            (None, Some(w)) if w > 0 => Ok(Load::Closed { window: w }),
            _ => Err("give exactly one of --rate R (R > 0) or --window W (W > 0)".into()),
        }
    }
}

/// Growable bit set over sequence numbers.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    /// Sets bit `i`; returns whether it was already set.
    fn set(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        was
    }

    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

/// What happened to one sender's messages; written by its own socket (acks) and by its peer's
/// socket (deliveries).
#[derive(Debug, Default)]
struct Tracker {
    acked: Bits,
    delivered: Bits,
    /// Highest sequence delivered so far, for the order check.
    highest: Option<u64>,
}

/// One sender's flow of messages.
#[derive(Debug)]
struct Flow {
    tracker: Mutex<Tracker>,
    /// Closed loop: free slots in the sender's window.
    window: Semaphore,
}

/// Run-wide counters (read by the progress line).
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    /// Sends answered with `error` (rate limits included).
    refused: AtomicU64,
    rate_limited: AtomicU64,
    /// First delivery of a message to the peer.
    delivered: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    /// The sender's own copy of its message.
    echoes: AtomicU64,
    /// `error` events without an ack (not answers to sends).
    other_errors: AtomicU64,
    /// `receive_message` whose text is not a bench message.
    foreign: AtomicU64,
    /// Sockets that closed or failed during the run.
    closed: AtomicU64,
}

/// Shared by every task of the run.
#[derive(Debug)]
struct Shared {
    flows: Vec<Flow>,
    counters: Counters,
    /// Zero of the `send_ns` stamps.
    base: Instant,
    first_close: Mutex<Option<String>>,
    /// Deliveries and refusals give back window slots (closed loop only).
    closed_loop: bool,
}

impl Shared {
    /// The state of a run of `users` users; in the closed loop each sender's window starts
    /// with all its slots free.
    fn new(users: usize, load: Load) -> Arc<Shared> {
        let window = match load {
            Load::Closed { window } => window,
            Load::Open { .. } => 0,
        };
        Arc::new(Shared {
            flows: (0..users)
                .map(|_| Flow {
                    tracker: Mutex::new(Tracker::default()),
                    window: Semaphore::new(window),
                })
                .collect(),
            counters: Counters::default(),
            base: Instant::now(),
            first_close: Mutex::new(None),
            closed_loop: window > 0,
        })
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn note_close(&self, who: usize, why: String) {
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_close.lock() {
            first.get_or_insert_with(|| format!("socket {who}: {why}"));
        }
    }

    /// Messages acked, yet never delivered to the peer.
    fn lost(&self) -> Result<u64> {
        let mut lost = 0u64;
        for flow in &self.flows {
            let t = flow.tracker.lock().map_err(|_| "tracker lock poisoned")?;
            lost += t.acked.ones().filter(|&s| !t.delivered.get(s)).count() as u64;
        }
        Ok(lost)
    }
}

/// The `chat` mode: the users, their rooms and sockets; the sending and the drain; the
/// readers' latencies and the losses; the report.
pub async fn run(args: ChatArgs) -> Result<()> {
    let load = Load::from_args(&args)?;
    if args.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    let nofile = raise_nofile();
    let target = Target::resolve(&args.common.url).await?;
    let observers = Observers::new(&args.common).await?;

    // Setup: registered, paired users with their sockets open, and a reader on each socket.
    let users = args.pairs * 2;
    let pop = populate(&target, &args, users, &observers).await?;
    let senders: Vec<usize> = (0..users).filter(|u| !args.one_way || u % 2 == 0).collect();
    let shared = Shared::new(users, load);
    let mut sockets = Sockets::start(pop.sockets, &shared);
    let _progress = progress(shared.clone());

    // Measurement window: from the first send to the end of the drain.
    let own_cpu = OwnCpu::start();
    let meters_start = observers.sample().await?;
    let sent = send_and_drain(&args, load, &senders, &pop.rooms, &mut sockets, &shared).await?;
    let meters_end = observers.sample().await?;
    let client_cpu = own_cpu.elapsed_us();

    // Collecting: the readers' latencies, then what was acked and never delivered.
    let latency = sockets.finish().await?;
    let measured = Measured {
        senders: senders.len(),
        setup_secs: pop.setup_secs,
        sent,
        lost: shared.lost()?,
        latency,
        meters: (meters_start, meters_end),
        client_cpu,
        nofile,
    };
    report(&args, load, &shared, &measured).print(args.common.json);
    Ok(())
}

/// Registers `users` users, pairs them into one room per pair and opens their sockets.
async fn populate(
    target: &Target,
    args: &ChatArgs,
    users: usize,
    observers: &Observers,
) -> Result<Population> {
    let plan = Plan {
        users,
        per_addr: args.per_addr,
        read_buffer: 16 << 10,
        connect_concurrency: args.common.connect_concurrency,
    };
    crate::users::build(target, &args.common, plan, observers).await
}

/// This process's CPU time over the measurement window: the load generator shares the cores
/// with the server, so its own cost is reported too. `None` where `/proc` cannot be read.
struct OwnCpu {
    reader: Option<ProcReader>,
    start: Option<ProcSample>,
}

impl OwnCpu {
    fn start() -> OwnCpu {
        let reader = ProcReader::new(std::process::id()).ok();
        let start = reader.as_ref().and_then(|r| r.sample().ok());
        OwnCpu { reader, start }
    }

    /// CPU µs used since [`OwnCpu::start`].
    fn elapsed_us(&self) -> Option<u64> {
        let end = self.reader.as_ref().and_then(|r| r.sample().ok());
        match (self.start, end) {
            (Some(a), Some(b)) => Some(b.cpu_us.saturating_sub(a.cpu_us)),
            _ => None,
        }
    }
}

/// The users' sockets, split: a reader task on each read half, and the write halves, which the
/// senders take.
struct Sockets {
    sinks: Vec<Option<SplitSink<Ws, Message>>>,
    readers: tokio::task::JoinSet<Histogram<u64>>,
    stop: watch::Sender<bool>,
}

impl Sockets {
    /// Splits user `u`'s socket (`sockets[u]`) and starts its [`reader`].
    fn start(sockets: Vec<Ws>, shared: &Arc<Shared>) -> Sockets {
        let (stop, stop_rx) = watch::channel(false);
        let mut readers = tokio::task::JoinSet::new();
        let mut sinks = Vec::with_capacity(sockets.len());
        for (u, ws) in sockets.into_iter().enumerate() {
            let (sink, stream) = ws.split();
            sinks.push(Some(sink));
            readers.spawn(reader(stream, u, shared.clone(), stop_rx.clone()));
        }
        Sockets {
            sinks,
            readers,
            stop,
        }
    }

    /// Stops the readers and merges their latency histograms; the write halves that no sender
    /// took are dropped after them.
    async fn finish(mut self) -> Result<Histogram<u64>> {
        let _ = self.stop.send(true);
        let mut latency = histogram();
        while let Some(joined) = self.readers.join_next().await {
            if let Ok(h) = joined {
                latency
                    .add(h)
                    .map_err(|e| format!("merging histograms: {e}"))?;
            }
        }
        Ok(latency)
    }
}

/// The progress line: the run's counters, and deliveries over the last second.
fn progress(shared: Arc<Shared>) -> Progress {
    let mut last = 0u64;
    Progress::start("chat", move || {
        let c = &shared.counters;
        let d = c.delivered.load(Ordering::Relaxed);
        let line = format!(
            "sent {}  delivered {} ({}/s)  acked {}  refused {}  dup {}  ooo {}  closed {}",
            c.sent.load(Ordering::Relaxed),
            d,
            d - last,
            c.acked.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
            c.duplicated.load(Ordering::Relaxed),
            c.out_of_order.load(Ordering::Relaxed),
            c.closed.load(Ordering::Relaxed),
        );
        last = d;
        line
    })
}

/// The sending and the drain after it.
#[derive(Debug)]
struct Sent {
    /// Seconds of sending (`--duration`).
    window_secs: f64,
    /// Sent and delivered by the end of the sending window.
    sent_in_window: u64,
    delivered_in_window: u64,
    /// Seconds from the end of the sending to the end of the drain.
    drain_secs: f64,
}

/// When the senders send: from `start` until `end` (`--duration` later). No wait of a sender
/// outlasts `hard_end` (`--drain` after `end`), so a blocked socket cannot hold up the run.
#[derive(Debug, Clone, Copy)]
struct SendWindow {
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    hard_end: tokio::time::Instant,
}

/// Sends from now for `--duration` (a [`sender`] task for each of `senders`, paced by `load`),
/// then waits up to `--drain` for what is still on its way.
async fn send_and_drain(
    args: &ChatArgs,
    load: Load,
    senders: &[usize],
    rooms: &[String],
    sockets: &mut Sockets,
    shared: &Arc<Shared>,
) -> Result<Sent> {
    let duration = secs(args.duration);
    let drain = secs(args.drain);
    let start = tokio::time::Instant::now();
    let window = SendWindow {
        start,
        end: start + duration,
        hard_end: start + duration + drain,
    };
    let mut sending = Sending::start(
        args.msg_bytes,
        load,
        window,
        senders,
        rooms,
        sockets,
        shared,
    )?;
    tokio::time::sleep_until(window.end).await;
    sending.stop_pacer().await;
    let delivered_in_window = shared.counters.delivered.load(Ordering::Relaxed);
    let sent_in_window = shared.counters.sent.load(Ordering::Relaxed);
    sending.join_senders().await;
    let send_end = tokio::time::Instant::now();
    wait_for_stragglers(&shared.counters, send_end + drain).await;
    Ok(Sent {
        window_secs: duration.as_secs_f64(),
        sent_in_window,
        delivered_in_window,
        drain_secs: send_end.elapsed().as_secs_f64(),
    })
}

/// The running senders and, in the open loop, the [`pace`] thread that feeds them.
struct Sending {
    senders: tokio::task::JoinSet<()>,
    pacer: Option<std::thread::JoinHandle<()>>,
}

impl Sending {
    /// Starts a [`sender`] for each user of `senders` on its socket's write half (taken from
    /// `sockets`) and its pair's room; in the open loop, also the pacer thread.
    fn start(
        msg_bytes: usize,
        load: Load,
        window: SendWindow,
        senders: &[usize],
        rooms: &[String],
        sockets: &mut Sockets,
        shared: &Arc<Shared>,
    ) -> Result<Sending> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut schedules = Vec::with_capacity(senders.len());
        for &u in senders {
            let Some(sink) = sockets.sinks[u].take() else {
                continue;
            };
            let room = rooms[u / 2].clone();
            let pace = match load {
                Load::Open { .. } => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    schedules.push(tx);
                    Pace::Open(rx)
                }
                Load::Closed { .. } => Pace::Closed,
            };
            tasks.spawn(sender(
                sink,
                u,
                room,
                shared.clone(),
                pace,
                window,
                msg_bytes,
            ));
        }
        let pacer = match load {
            Load::Open { rate } => {
                let (base, start, until) =
                    (shared.base, window.start.into_std(), window.end.into_std());
                Some(
                    std::thread::Builder::new()
                        .name("pacer".into())
                        .spawn(move || pace(schedules, base, start, rate, until))?,
                )
            }
            Load::Closed { .. } => None,
        };
        Ok(Sending {
            senders: tasks,
            pacer,
        })
    }

    /// Waits for the pacer, which ends at the window's end; joined off the runtime's threads.
    async fn stop_pacer(&mut self) {
        if let Some(pacer) = self.pacer.take() {
            let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
        }
    }

    /// Waits for every sender to end (each stops at the window's end, or when its socket fails).
    async fn join_senders(mut self) {
        while self.senders.join_next().await.is_some() {}
    }
}

/// Waits until every sent message is answered (ack or error) and delivered (unless refused),
/// or until `deadline`. The ack may come after the deliveries.
async fn wait_for_stragglers(c: &Counters, deadline: tokio::time::Instant) {
    loop {
        let (sent, refused) = (
            c.sent.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
        );
        let delivered = c.delivered.load(Ordering::Relaxed) + refused >= sent;
        let answered = c.acked.load(Ordering::Relaxed) + refused >= sent;
        if (delivered && answered) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a run measured, besides the counters in [`Shared`].
#[derive(Debug)]
struct Measured {
    senders: usize,
    /// Seconds spent registering, pairing and connecting.
    setup_secs: [f64; 3],
    sent: Sent,
    /// Acked, yet never delivered.
    lost: u64,
    /// Delivery latency (µs), over every reader.
    latency: Histogram<u64>,
    /// The server's and Redis's readings at the start and the end of the measurement window.
    meters: (Window, Window),
    /// This process's CPU over the measurement window.
    client_cpu: Option<u64>,
    nofile: u64,
}

/// The result table of a run.
fn report(args: &ChatArgs, load: Load, shared: &Shared, m: &Measured) -> Report {
    let c = &shared.counters;
    let (sent, acked, refused, delivered) = (
        c.sent.load(Ordering::Relaxed),
        c.acked.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.delivered.load(Ordering::Relaxed),
    );
    let window_secs = m.sent.window_secs;
    let (window_start, window_end) = &m.meters;
    let (server_cpu, redis_cpu) = cpu_delta(window_start, window_end);
    let mut r = Report::new("chat");
    r.add("pairs", args.pairs, "pairs (one room each)")
        .add(
            "senders",
            m.senders,
            if args.one_way {
                "one per pair"
            } else {
                "both members of each pair"
            },
        )
        .add(
            "load",
            match load {
                Load::Open { .. } => "open",
                Load::Closed { .. } => "closed",
            },
            "open = --rate, closed = --window",
        )
        .num("target_rate", args.rate, "msgs/s offered (open loop)")
        .add("window", args.window, "in flight per sender (closed loop)")
        .add("msg_bytes", args.msg_bytes, "bytes of message text")
        .num("duration_s", Some(window_secs), "s of sending")
        .num(
            "drain_s",
            Some(m.sent.drain_secs),
            "s waited for stragglers",
        )
        .num("setup_register_s", Some(m.setup_secs[0]), "s")
        .num("setup_pair_s", Some(m.setup_secs[1]), "s")
        .num("setup_connect_s", Some(m.setup_secs[2]), "s")
        .add("sent", sent, "send_message frames")
        .num(
            "sent_per_sec",
            Some(m.sent.sent_in_window as f64 / window_secs),
            "msgs/s during the window",
        )
        .add("acked", acked, "acks for sends")
        .add("refused", refused, "sends answered with error")
        .add(
            "rate_limited",
            c.rate_limited.load(Ordering::Relaxed),
            "of which rate_limited",
        )
        .add(
            "unanswered",
            sent.saturating_sub(acked + refused),
            "sends with neither ack nor error",
        )
        .add("delivered", delivered, "first deliveries to the peer")
        .num(
            "delivered_per_sec",
            Some(m.sent.delivered_in_window as f64 / window_secs),
            "deliveries/s during the window",
        )
        .add(
            "echoes",
            c.echoes.load(Ordering::Relaxed),
            "own messages echoed to the sender",
        )
        .add("lost", m.lost, "acked but never delivered")
        .add(
            "duplicated",
            c.duplicated.load(Ordering::Relaxed),
            "delivered more than once",
        )
        .add(
            "out_of_order",
            c.out_of_order.load(Ordering::Relaxed),
            "delivered after a later one",
        )
        .add(
            "foreign",
            c.foreign.load(Ordering::Relaxed),
            "messages not sent by this run",
        )
        .add(
            "other_errors",
            c.other_errors.load(Ordering::Relaxed),
            "error events without ack",
        )
        .add(
            "sockets_closed",
            c.closed.load(Ordering::Relaxed),
            "sockets closed during the run",
        )
        .add(
            "first_close",
            shared.first_close.lock().ok().and_then(|f| f.clone()),
            "",
        )
        .latency(
            [
                "latency_p50_us",
                "latency_p90_us",
                "latency_p99_us",
                "latency_max_us",
                "latency_mean_us",
            ],
            &m.latency,
        )
        .add(
            "server_cpu_us",
            server_cpu,
            "server CPU over the window + drain",
        )
        .num(
            "server_cpu_us_per_msg",
            per(server_cpu, delivered as f64),
            "µs per delivered message",
        )
        .add(
            "server_rss_kib",
            window_end.server.map(|s| s.rss_kib),
            "KiB at the end",
        )
        .add(
            "redis_cpu_us",
            redis_cpu,
            "Redis CPU over the window + drain",
        )
        .num(
            "redis_cpu_us_per_msg",
            per(redis_cpu, delivered as f64),
            "µs per delivered message",
        )
        .add(
            "redis_used_memory_delta",
            memory_delta(window_start, window_end),
            "bytes of used_memory growth over the window + drain",
        )
        .num(
            "redis_bytes_per_msg",
            per_signed(memory_delta(window_start, window_end), acked as f64),
            "used_memory growth per acked message",
        )
        .num(
            "client_cpu_us_per_msg",
            per(m.client_cpu, delivered as f64),
            "this load generator's CPU per message",
        )
        .add("client_nofile", m.nofile, "this process's open-file limit");
    r
}

/// Open loop: hands the senders their messages' scheduled send times (ns since `base`) as each
/// comes due, round robin, `rate` per second in all from `start` until `until`; then drops the
/// channels, which ends the senders. `std::thread::sleep` wakes within tens of microseconds of
/// the time asked; what is due on waking is handed out at once, stamped with its schedule.
fn pace(
    schedules: Vec<tokio::sync::mpsc::UnboundedSender<u64>>,
    base: Instant,
    start: Instant,
    rate: f64,
    until: Instant,
) {
    if schedules.is_empty() {
        return;
    }
    let step_ns = 1e9 / rate;
    let n = schedules.len() as u64;
    for j in 0u64.. {
        let at = start + Duration::from_nanos((step_ns * j as f64) as u64);
        if at >= until {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let stamp_ns = at.saturating_duration_since(base).as_nanos() as u64;
        // A sender that ended (its socket closed) takes no more.
        let _ = schedules[(j % n) as usize].send(stamp_ns);
    }
}

/// How a sender knows when to send.
enum Pace {
    /// The scheduled send times, from [`pace`].
    Open(tokio::sync::mpsc::UnboundedReceiver<u64>),
    /// Whenever a window slot is free.
    Closed,
}

/// Sends this user's messages until `window.end`; every wait is bounded by `window.hard_end`.
async fn sender(
    mut sink: SplitSink<Ws, Message>,
    me: usize,
    room: String,
    shared: Arc<Shared>,
    mut pace: Pace,
    window: SendWindow,
    msg_bytes: usize,
) {
    let (deadline, hard_deadline) = (window.end, window.hard_end);
    let flow = &shared.flows[me];
    let mut frame = String::with_capacity(msg_bytes + room.len() + 96);
    let mut seq: u64 = 0;
    loop {
        if tokio::time::Instant::now() >= deadline {
            // A sender that fell behind its schedule does not catch up after the window.
            break;
        }
        let stamp_ns = match &mut pace {
            // The scheduled time, not the actual one: lateness counts as latency.
            Pace::Open(due) => match tokio::time::timeout_at(deadline, due.recv()).await {
                Ok(Some(stamp_ns)) => stamp_ns,
                _ => break,
            },
            Pace::Closed => {
                match tokio::time::timeout_at(deadline, flow.window.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    _ => break,
                }
                shared.now_ns()
            }
        };
        frame.clear();
        build_frame(&mut frame, &room, me, seq, stamp_ns, msg_bytes);
        match tokio::time::timeout_at(hard_deadline, sink.send(Message::text(frame.as_str()))).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.note_close(me, format!("send failed: {e}"));
                break;
            }
            Err(_) => {
                shared.note_close(me, "send blocked past the drain".into());
                break;
            }
        }
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
}

/// `{"event":"send_message","data":{"room":...,"message":"me:seq:ns:xxx"},"ack":seq}`. The
/// text is digits, colons and `x`, so it needs no JSON escaping.
fn build_frame(out: &mut String, room: &str, me: usize, seq: u64, stamp_ns: u64, msg_bytes: usize) {
    use std::fmt::Write;
    let _ = write!(
        out,
        r#"{{"event":"send_message","data":{{"room":"{room}","message":""#
    );
    let text_start = out.len();
    let _ = write!(out, "{me}:{seq}:{stamp_ns}:");
    let text_len = out.len() - text_start;
    out.extend(std::iter::repeat_n('x', msg_bytes.saturating_sub(text_len)));
    let _ = write!(out, r#""}},"ack":{seq}}}"#);
}

/// `(sender, seq, stamp_ns)` from a bench message text.
fn parse_text(text: &str) -> Option<(usize, u64, u64)> {
    let mut it = text.splitn(4, ':');
    let sender = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let ns = it.next()?.parse().ok()?;
    it.next()?;
    Some((sender, seq, ns))
}

/// Reads user `me`'s socket until told to stop; returns its latency histogram (µs).
async fn reader(
    mut stream: SplitStream<Ws>,
    me: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let mut hist = histogram();
    let c = &shared.counters;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = stream.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                shared.note_close(me, format!("closed by the server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                shared.note_close(me, format!("read failed: {e}"));
                break;
            }
            None => {
                shared.note_close(me, "connection ended".into());
                break;
            }
        };
        let Ok(frame) = serde_json::from_str::<Incoming>(&text) else {
            c.other_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match frame.event.as_ref() {
            "receive_message" => {
                let parsed = frame
                    .data
                    .and_then(|d| serde_json::from_str::<MessageData>(d.get()).ok())
                    .and_then(|m| parse_text(&m.message));
                let Some((from, seq, stamp_ns)) =
                    parsed.filter(|(from, _, _)| *from < shared.flows.len())
                else {
                    c.foreign.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if from == me {
                    c.echoes.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let now = shared.now_ns();
                let flow = &shared.flows[from];
                let (dup, late) = match flow.tracker.lock() {
                    Ok(mut t) => {
                        let dup = t.delivered.set(seq);
                        let late = !dup && t.highest.is_some_and(|h| seq < h);
                        if !dup && !late {
                            t.highest = Some(seq);
                        }
                        (dup, late)
                    }
                    Err(_) => continue,
                };
                if dup {
                    c.duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if late {
                    c.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                c.delivered.fetch_add(1, Ordering::Relaxed);
                if shared.closed_loop {
                    flow.window.add_permits(1);
                }
                let us = now.saturating_sub(stamp_ns) / 1000;
                hist.saturating_record(us.max(1));
            }
            "ack" => {
                if let Some(seq) = frame.ack {
                    if let Ok(mut t) = shared.flows[me].tracker.lock() {
                        t.acked.set(seq);
                    }
                    c.acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            "error" => match frame.ack {
                Some(_) => {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    let code = frame
                        .data
                        .and_then(|d| serde_json::from_str::<ErrorData>(d.get()).ok());
                    if code.and_then(|e| e.code).as_deref() == Some("rate_limited") {
                        c.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    // A refused message will never arrive: free its window slot.
                    if shared.closed_loop {
                        shared.flows[me].window.add_permits(1);
                    }
                }
                None => {
                    c.other_errors.fetch_add(1, Ordering::Relaxed);
                }
            },
            _ => {}
        }
    }
    hist
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_parseable_text_of_the_asked_size() {
        let mut f = String::new();
        build_frame(&mut f, "room-1", 3, 42, 123_456_789, 64);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["event"], "send_message");
        assert_eq!(v["ack"], 42);
        assert_eq!(v["data"]["room"], "room-1");
        let text = v["data"]["message"].as_str().unwrap();
        assert_eq!(text.len(), 64);
        assert_eq!(parse_text(text), Some((3, 42, 123_456_789)));
        // Shorter than the header: the header alone.
        f.clear();
        build_frame(&mut f, "r", 1, 2, 3, 1);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["data"]["message"], "1:2:3:");
        assert_eq!(parse_text("hello"), None);
        assert_eq!(parse_text("1:2:x:"), None);
    }

    #[test]
    fn bits_track_sequences() {
        let mut b = Bits::default();
        assert!(!b.set(3));
        assert!(b.set(3));
        assert!(!b.set(200));
        assert!(b.get(200) && !b.get(199));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![3, 200]);
    }
}
