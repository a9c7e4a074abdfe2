//! [`NotificationStore`] for [`RedisStore`]: the offline notification queue (see the crate docs,
//! "Offline notifications", and the key map: `nq:`, `nd`, `na`, `nn`, `ns`). An entry is the text
//! `<seq>|<to>|<kind>|<from>|<at>|<room>|<message id>|<preview>`: the functions write its first
//! two fields and the caller the rest, and the preview, which may hold `|`, comes last.

use chat_core::store::{
    Enqueued, LeasedNotification, Notification, NotificationKind, NotificationStore, OfflineEvent,
};
use chat_core::{MessageId, Millis, Phone, Result, RoomId};
use redis::Value;

use super::bad_reply;
use crate::RedisStore;
use crate::scripts::Function;

/// `<kind>|<from>|<at>|<room>|<message id>|<preview>`: the entry after `<seq>|<to>|`.
fn tail(event: &OfflineEvent) -> String {
    match event {
        OfflineEvent::Message {
            room,
            from,
            id,
            preview,
            at,
        } => format!("m|{from}|{at}|{room}|{id}|{preview}"),
        OfflineEvent::ChatRequest { from, at, .. } => format!("r|{from}|{at}|||"),
    }
}

/// An entry as the functions keep it, back into its parts.
fn decode_entry(entry: &str) -> Option<(u64, Notification)> {
    let mut parts = entry.splitn(8, '|');
    let mut next = || parts.next();
    let seq = next()?.parse().ok()?;
    let to = Phone::parse(next()?).ok()?;
    let kind = next()?;
    let from = Phone::parse(next()?).ok()?;
    let at = next()?.parse().ok()?;
    let (room, id, preview) = (next()?, next()?, next()?);
    let kind = match kind {
        "m" => NotificationKind::Message {
            room: RoomId::parse(room)?,
            id: MessageId::parse(id).ok()?,
            preview: preview.to_owned(),
        },
        "r" => NotificationKind::ChatRequest,
        _ => return None,
    };
    Some((seq, Notification { to, from, kind, at }))
}

/// `<seq>|<to>|...`: the two fields the functions wrote, to remove an entry that does not decode.
fn seq_and_to(entry: &str) -> Option<(&str, &str)> {
    let mut parts = entry.splitn(3, '|');
    Some((parts.next()?, parts.next()?))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait::async_trait]
impl NotificationStore for RedisStore {
    async fn enqueue_notification(
        &self,
        event: OfflineEvent,
        now: Millis,
        max_queue: usize,
    ) -> Result<Enqueued> {
        let (kind, from, target) = match &event {
            OfflineEvent::Message { room, from, .. } => ("m", from, room.to_string()),
            OfflineEvent::ChatRequest { from, to, .. } => ("r", from, to.to_string()),
        };
        let reply: String = self
            .run(
                Function::Notify,
                &[
                    kind,
                    from.as_str(),
                    &target,
                    &now.to_string(),
                    &max_queue.to_string(),
                    &tail(&event),
                ],
            )
            .await?;
        match reply.as_str() {
            "queued" => Ok(Enqueued::Queued),
            "online" => Ok(Enqueued::Online),
            "dropped" => Ok(Enqueued::Dropped),
            "none" => Ok(Enqueued::NoRecipient),
            other => Err(bad_reply(&format!("notify answered {other}"))),
        }
    }

    async fn due_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<LeasedNotification>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = self
            .run(
                Function::DueNotifications,
                &[
                    &now.to_string(),
                    &lease_until.to_string(),
                    &limit.to_string(),
                ],
            )
            .await?;
        let Value::Array(items) = reply else {
            return Err(bad_reply("due_notifications: not an array"));
        };
        let mut out = Vec::with_capacity(items.len() / 2);
        for pair in items.chunks(2) {
            let [entry, attempts] = pair else {
                return Err(bad_reply("due_notifications: odd length"));
            };
            let entry = text(entry).ok_or_else(|| bad_reply("due_notifications: entry"))?;
            let attempts = text(attempts)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0);
            match decode_entry(&entry) {
                Some((seq, notification)) => out.push(LeasedNotification {
                    seq,
                    attempts,
                    notification,
                    lease_until,
                }),
                None => {
                    // Not ours (or a bug): remove it, or it would hold its recipient's queue.
                    tracing::error!(entry, "undecodable notification removed");
                    if let Some((seq, to)) = seq_and_to(&entry) {
                        self.run::<i64>(Function::AckNotification, &[to, seq, &now.to_string()])
                            .await?;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn ack_notification(&self, leased: &LeasedNotification, now: Millis) -> Result<bool> {
        let removed: i64 = self
            .run(
                Function::AckNotification,
                &[
                    leased.notification.to.as_str(),
                    &leased.seq.to_string(),
                    &now.to_string(),
                ],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn retry_notification(&self, leased: &LeasedNotification, at: Millis) -> Result<bool> {
        let kept: i64 = self
            .run(
                Function::RetryNotification,
                &[
                    leased.notification.to.as_str(),
                    &leased.seq.to_string(),
                    &at.to_string(),
                ],
            )
            .await?;
        Ok(kept == 1)
    }

    async fn notification_queue_len(&self) -> Result<u64> {
        let v = self.command(redis::cmd("GET").arg(self.key("nn"))).await?;
        match v {
            Value::Nil => Ok(0),
            v => text(&v)
                .and_then(|t| t.parse::<i64>().ok())
                .map(|n| u64::try_from(n).unwrap_or(0))
                .ok_or_else(|| bad_reply("notification queue length")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_a_bar_in_the_preview() {
        let from = Phone::parse("+14155550100").expect("phone");
        let to = Phone::parse("+14155550101").expect("phone");
        let room = RoomId::generate();
        let id = MessageId { ms: 17, seq: 2 };
        let event = OfflineEvent::Message {
            room,
            from: from.clone(),
            id,
            preview: "a|b".into(),
            at: 99,
        };
        let entry = format!("7|{to}|{}", tail(&event));
        let (seq, n) = decode_entry(&entry).expect("decodes");
        assert_eq!(seq, 7);
        assert_eq!(
            n,
            Notification {
                to: to.clone(),
                from: from.clone(),
                kind: NotificationKind::Message {
                    room,
                    id,
                    preview: "a|b".into()
                },
                at: 99
            }
        );
        let req = OfflineEvent::ChatRequest {
            from,
            to: to.clone(),
            at: 5,
        };
        let (_, n) = decode_entry(&format!("8|{to}|{}", tail(&req))).expect("decodes");
        assert_eq!(n.kind, NotificationKind::ChatRequest);
        assert!(decode_entry("8|junk").is_none());
    }
}
