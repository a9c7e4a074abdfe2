//! Offline notifications, delivered: the worker that leases due notifications from the store's
//! queue ([`NotificationStore`](chat_core::store::NotificationStore)) and POSTs each to `--webhook-url` as JSON, signed with
//! `--webhook-secret` when there is one.
//!
//! Delivery is at least once, and once per event across the nodes: the queue is the store's
//! (in Redis, shared), each recipient's oldest notification is leased to one node at a time, and
//! it leaves the queue only when the receiver answered 2xx within [`WebhookConfig::timeout`]. A
//! failed attempt makes it due again after an exponential backoff (1 s doubling, at most 5
//! minutes), until an hour after the event, when it is given up (logged). A node that dies
//! holding a lease loses nothing: the lease runs out and another node delivers.
//!
//! Nothing here runs on a chat's path: the service only enqueues (one store step); this worker
//! runs on its own tasks, at most [`WebhookConfig::concurrency`] POSTs at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chat_core::store::{LeasedNotification, NotificationKind};
use chat_core::{ChatService, Names, Store};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-chat-signature";
/// Longest response body read (and thrown away) so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// How often the queue's length is read for the `chat_webhook_queue` gauge.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// A failing poll logs at most once per this.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The worker's settings. Defaults are the contract's; the hidden `--webhook-*-ms` flags shorten
/// them for tests.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where to POST (an `http://` or `https://` URL).
    pub url: Uri,
    /// The HMAC key, if notifications are signed.
    pub secret: Option<Vec<u8>>,
    /// A 2xx must come within this.
    pub timeout: Duration,
    /// The first retry's delay; each further one doubles it ...
    pub backoff_base: Duration,
    /// ... up to this.
    pub backoff_max: Duration,
    /// A notification not delivered this long after its event is given up.
    pub give_up_after: Duration,
    /// How long a node owns a notification it took before another node may take it (longer
    /// than `timeout`, so a live node's attempt ends before anyone else's begins).
    pub lease: Duration,
    /// How often the queue is polled for due notifications (what this node queues is looked
    /// for at once, see [`ChatService::notification_queued`]).
    pub poll: Duration,
    /// POSTs in flight at most.
    pub concurrency: usize,
    /// The queue's bound (past it, new notifications are dropped).
    pub queue_max: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .field("timeout", &self.timeout)
            .field("backoff_base", &self.backoff_base)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// The contract's settings for `url`.
    pub fn new(url: Uri, secret: Option<Vec<u8>>) -> WebhookConfig {
        WebhookConfig {
            url,
            secret,
            timeout: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            concurrency: 32,
            queue_max: chat_core::NOTIFY_QUEUE_MAX,
        }
    }

    /// The delay before the next attempt after `failed` failed attempts (1 or more).
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(30);
        self.backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

/// Checks a `--webhook-url`: an absolute `http://` or `https://` URL with a host.
pub fn parse_url(raw: &str) -> Result<Uri, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|e| format!("--webhook-url `{raw}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "--webhook-url `{raw}` must start with http:// or https://"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("--webhook-url `{raw}` has no host"));
    }
    Ok(uri)
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`, the `X-Chat-Signature` value.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The JSON body of a notification, as the contract gives it.
pub fn body(leased: &LeasedNotification, names: &Names) -> Vec<u8> {
    let n = &leased.notification;
    let mut v = serde_json::json!({
        "to": n.to,
        "from": n.from,
        "names": names,
        "at": n.at,
    });
    match &n.kind {
        NotificationKind::Message { room, id, preview } => {
            v["type"] = "message".into();
            v["room"] = room.to_string().into();
            v["id"] = id.to_string().into();
            v["preview"] = preview.as_str().into();
        }
        NotificationKind::ChatRequest => v["type"] = "chat_request".into(),
    }
    v.to_string().into_bytes()
}

/// The worker's counters, shown on `/metrics` (with the service's count of dropped
/// notifications) by [`WebhookCollector`].
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Notifications delivered (a 2xx in time).
    pub sent: AtomicU64,
    /// Attempts that failed (no answer in time, a refused connection, a non-2xx status).
    pub failed: AtomicU64,
    /// Notifications given up an hour after their event.
    pub expired: AtomicU64,
    /// The queue's length at the last reading (-1 before the first).
    pub queue: AtomicI64,
}

/// `chat_webhook_sent_total`, `chat_webhook_failed_total`, `chat_webhook_dropped_total`,
/// `chat_webhook_queue`.
#[derive(Debug)]
pub struct WebhookCollector {
    /// The worker's counters.
    pub stats: Arc<WebhookStats>,
    /// The service (it counts notifications dropped at a full queue).
    pub service: ChatService,
}

impl Collector for WebhookCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "chat_webhook_sent",
                "Offline notifications delivered (2xx in time)",
                self.stats.sent.load(Ordering::Relaxed),
            ),
            (
                "chat_webhook_failed",
                "Webhook attempts that failed (retried later)",
                self.stats.failed.load(Ordering::Relaxed),
            ),
            (
                "chat_webhook_dropped",
                "Offline notifications dropped because the queue was full",
                self.service.notifications_dropped(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let gauge = ConstGauge::new(self.stats.queue.load(Ordering::Relaxed).max(0));
        let metric = encoder.encode_descriptor(
            "chat_webhook_queue",
            "Offline notifications queued (all nodes)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled HTTP/1.1 client the worker posts with: plain http, or https through rustls (on
/// ring) trusting the system's root certificates, read once here. Fails only for an https URL
/// when the system has no readable roots.
pub fn client(config: &WebhookConfig) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.timeout));
    http.set_nodelay(true);
    // The TLS layer above it takes https.
    http.enforce_http(false);
    // ring, as the Redis TLS (aws-lc-rs would add a cmake build of its C library). rustls
    // 0.23.48 marks it deprecated for lacking post-quantum key exchange; the classical one it
    // offers is what webhook receivers negotiate today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = if config.url.scheme_str() == Some("https") {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| format!("--webhook-url is https, but no system root certificates: {e}"))?
    } else {
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings refused: {e}"))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
    };
    let connector = tls.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(config.concurrency)
        .build(connector))
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Failed(String),
}

/// Runs the worker until `stop`: polls the queue, POSTs what is due, acknowledges or
/// reschedules each.
pub async fn run(
    service: ChatService,
    store: Arc<dyn Store>,
    client: HttpClient,
    config: WebhookConfig,
    stats: Arc<WebhookStats>,
    stop: CancellationToken,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut poll = tokio::time::interval(config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauge = tokio::time::interval(GAUGE_EVERY);
    gauge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warn: Option<tokio::time::Instant> = None;
    tracing::info!(url = %config.url, signed = config.secret.is_some(), "offline notifications on");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = gauge.tick() => {
                match store.notification_queue_len().await {
                    Ok(n) => stats.queue.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed),
                    Err(e) => tracing::debug!(error = %e, "queue length not read"),
                }
                continue;
            }
            _ = poll.tick() => {}
            () = service.notification_queued() => {}
            Some(_) = tasks.join_next() => continue,
        }
        let free = slots.available_permits();
        if free == 0 {
            continue;
        }
        let now = service.now();
        let lease_until = now.saturating_add(millis(config.lease));
        let due = match store.due_notifications(now, lease_until, free).await {
            Ok(due) => due,
            Err(e) => {
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, "notification queue not read");
                    last_warn = Some(tokio::time::Instant::now());
                }
                continue;
            }
        };
        for leased in due {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                // Cannot happen (at most `free` were leased); its lease runs out and it is retried.
                break;
            };
            let (service, store, client) = (service.clone(), Arc::clone(&store), client.clone());
            let (config, stats) = (Arc::clone(&config), Arc::clone(&stats));
            tasks.spawn(async move {
                deliver(&service, &*store, &client, &config, &stats, leased).await;
                drop(permit);
            });
        }
    }
    // Attempts still in flight are abandoned: their leases run out and they are sent again
    // (by this node's successor or another), which at-least-once allows.
    tasks.abort_all();
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One attempt at one notification, and what the queue does after it.
async fn deliver(
    service: &ChatService,
    store: &dyn Store,
    client: &HttpClient,
    config: &WebhookConfig,
    stats: &WebhookStats,
    leased: LeasedNotification,
) {
    let n = &leased.notification;
    let names = service
        .names(&[n.to.clone(), n.from.clone()])
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "notification sent without names");
            Names::new()
        });
    let body = body(&leased, &names);
    let started = service.now();
    let outcome = post(client, config, body).await;
    let now = service.now();
    let result = match outcome {
        Attempt::Delivered => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                to = %n.to,
                seq = leased.seq,
                attempts = leased.attempts,
                delay_ms = now.saturating_sub(n.at),
                took_ms = now.saturating_sub(started),
                "notification delivered"
            );
            store.ack_notification(&leased, now).await
        }
        Attempt::Failed(why) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let failed = leased.attempts.saturating_add(1);
            if now.saturating_sub(n.at) >= millis(config.give_up_after) {
                stats.expired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(to = %n.to, seq = leased.seq, attempts = failed, error = why, "notification given up");
                store.ack_notification(&leased, now).await
            } else {
                let at = now.saturating_add(millis(config.backoff(failed)));
                tracing::info!(to = %n.to, seq = leased.seq, attempts = failed, retry_in_ms = at - now, error = why, "notification not delivered; will retry");
                store.retry_notification(&leased, at).await
            }
        }
    };
    if let Err(e) = result {
        // The lease runs out and the notification is attempted again.
        tracing::warn!(error = %e, to = %n.to, "notification queue not updated");
    }
}

/// POSTs `body`; delivered only on a 2xx within the timeout.
async fn post(client: &HttpClient, config: &WebhookConfig, body: Vec<u8>) -> Attempt {
    let mut request = hyper::Request::post(config.url.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "chat-server-webhook");
    if let Some(secret) = &config.secret {
        request = request.header(SIGNATURE_HEADER, sign(secret, &body));
    }
    let request = match request.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(format!("request not built: {e}")),
    };
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status();
        // Read (a bounded amount of) the body, so the connection goes back to the pool.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    match tokio::time::timeout(config.timeout, exchange).await {
        Ok(Ok(())) => Attempt::Delivered,
        Ok(Err(why)) => Attempt::Failed(why),
        Err(_) => Attempt::Failed(format!("no answer within {:?}", config.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::store::Notification;
    use chat_core::{MessageId, Phone, RoomId};

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(sign(b"other", b"{}"), sign(b"secret", b"{}"));
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let c = WebhookConfig::new(Uri::from_static("http://127.0.0.1/"), None);
        let secs: Vec<u64> = (1..=12).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(300));
        // An hour of failures is 20 attempts: 9 backing off to 256 s, then every 5 minutes.
        let mut t = Duration::ZERO;
        let mut n = 0;
        while t < c.give_up_after {
            n += 1;
            t += c.backoff(n);
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(parse_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(parse_url("https://push.example/hook").is_ok());
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[tokio::test]
    async fn clients_build_for_both_schemes() {
        for url in ["http://127.0.0.1:9/hook", "https://push.example/hook"] {
            let config = WebhookConfig::new(parse_url(url).unwrap(), None);
            // The https one reads the system's roots; a build machine has them.
            assert!(client(&config).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_body_is_the_contracts() {
        let to = Phone::parse("+14155550101").unwrap();
        let from = Phone::parse("+14155550100").unwrap();
        let room = RoomId::generate();
        let leased = LeasedNotification {
            seq: 1,
            attempts: 0,
            notification: Notification {
                to: to.clone(),
                from: from.clone(),
                kind: NotificationKind::Message {
                    room,
                    id: MessageId { ms: 5, seq: 1 },
                    preview: "hi".into(),
                },
                at: 1234,
            },
            lease_until: 0,
        };
        let mut names = Names::new();
        names.insert(from.clone(), "Asha".into());
        let v: serde_json::Value = serde_json::from_slice(&body(&leased, &names)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "message", "to": "+14155550101", "from": "+14155550100",
                "names": {"+14155550100": "Asha"}, "room": room.to_string(), "id": "5-1",
                "preview": "hi", "at": 1234})
        );
        let request = LeasedNotification {
            notification: Notification {
                kind: NotificationKind::ChatRequest,
                ..leased.notification
            },
            ..leased
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&request, &Names::new())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "chat_request", "to": "+14155550101",
                "from": "+14155550100", "names": {}, "at": 1234})
        );
    }
}
