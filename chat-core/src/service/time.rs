//! Time: the heartbeat, reaping dead nodes, every deadline, and leaving the cluster.

use crate::error::Result;
use crate::event::{Delivery, Event};
use crate::store::{DueTimer, Timer};
use crate::types::{Millis, Phone, Room};

use super::{ChatService, TIMER_BATCH, TIMER_LEASE_MS, TickReport, secs};

impl ChatService {
    /// Runs the lifetimes: refreshes this node's heartbeat, reaps dead nodes, and handles
    /// every due deadline. The server calls it about every quarter second; any node may.
    pub async fn tick(&self) -> Result<TickReport> {
        let now = self.now();
        let store = self.store();
        store
            .heartbeat(
                &self.inner.node,
                now.saturating_add(secs(self.inner.config.node_ttl_secs)),
            )
            .await?;
        let orphaned = store.reap_dead_nodes(now, self.grace_until(now)).await?;
        let mut report = TickReport {
            orphaned_users: orphaned.len(),
            ..TickReport::default()
        };
        loop {
            let due = store
                .due_timers(now, now.saturating_add(TIMER_LEASE_MS), TIMER_BATCH)
                .await?;
            let batch = due.len();
            for timer in due {
                self.handle_timer(&timer, now).await?;
                report.timers += 1;
            }
            if batch < TIMER_BATCH {
                return Ok(report);
            }
        }
    }

    /// A node shutting down cleanly: forget its sockets now rather than after `node_ttl`.
    pub async fn leave_cluster(&self) -> Result<()> {
        let now = self.now();
        self.store()
            .remove_node(&self.inner.node, now, self.grace_until(now))
            .await
            .map(|_| ())
    }

    async fn handle_timer(&self, due: &DueTimer, now: Millis) -> Result<()> {
        match &due.timer {
            Timer::Presence(phone) => {
                let session_end = now.saturating_add(secs(self.inner.config.session_idle_secs));
                if self.store().go_offline(phone, now, session_end).await? {
                    self.announce_presence(phone, false).await;
                    self.schedule_idle_rooms(phone).await?;
                } else if self
                    .store()
                    .presence(phone)
                    .await?
                    .is_some_and(|p| p.conns == 0 && p.offline_since.is_some())
                {
                    // Already offline: a handler that failed after `go_offline` left this timer
                    // to come back after its lease. Finish its work, or the user's rooms would
                    // never be scheduled to end when idle.
                    self.schedule_idle_rooms(phone).await?;
                }
            }
            Timer::SessionEnd(phone) => {
                self.end_session_if_due(phone).await?;
            }
            Timer::RoomExpiry(room) => {
                if let Some(room) = self.store().room(room).await? {
                    if room.expires_at <= now {
                        self.expire_room(&room).await?;
                    } else {
                        self.store()
                            .schedule(Timer::RoomExpiry(room.id), room.expires_at)
                            .await?;
                    }
                }
            }
            Timer::RoomIdle(room) => {
                if let Some(room) = self.store().room(room).await?
                    && let Some(idle_since) = self.both_offline_since(&room).await?
                {
                    let at = idle_since.saturating_add(secs(self.inner.config.room_idle_secs));
                    if at <= now {
                        self.expire_room(&room).await?;
                    } else {
                        self.store().schedule(Timer::RoomIdle(room.id), at).await?;
                    }
                }
            }
            Timer::RequestExpiry { from, to } => {
                self.store().remove_request(from, to, now).await?;
            }
        }
        self.store().finish_timer(due).await
    }

    /// When both members are offline: since when the later one went offline.
    async fn both_offline_since(&self, room: &Room) -> Result<Option<Millis>> {
        let mut since = 0;
        for member in &room.members {
            match self.store().presence(member).await? {
                Some(p) if p.conns == 0 => match p.offline_since {
                    Some(t) => since = since.max(t),
                    None => return Ok(None),
                },
                Some(_) => return Ok(None),
                // No session: offline since forever.
                None => {}
            }
        }
        Ok(Some(since))
    }

    async fn schedule_idle_rooms(&self, phone: &Phone) -> Result<()> {
        for room in self.store().rooms_of(phone).await? {
            if let Some(since) = self.both_offline_since(&room).await? {
                // From when the later member went offline, not from now: a retried handler
                // must not push the deadline back. A past deadline is simply due at once.
                let at = since.saturating_add(secs(self.inner.config.room_idle_secs));
                self.store().schedule(Timer::RoomIdle(room.id), at).await?;
            }
        }
        Ok(())
    }

    async fn expire_room(&self, room: &Room) -> Result<()> {
        if let Some(room) = self.store().delete_room(&room.id).await? {
            let now = self.now();
            for member in &room.members {
                // The room is gone already; if presence cannot be read, tell the member anyway
                // (a user with no socket receives nothing) rather than fail after the fact.
                let online = match self.store().presence(member).await {
                    Ok(p) => p.is_some_and(|p| p.online_at(now)),
                    Err(e) => {
                        tracing::warn!(error = %e, %member, "presence unknown; telling anyway");
                        true
                    }
                };
                if online {
                    self.publish(Delivery::to_user(
                        member.clone(),
                        Event::RoomExpired { room: room.id },
                    ))
                    .await;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn end_session_if_due(&self, phone: &Phone) -> Result<()> {
        let now = self.now();
        let offline_before = now.saturating_sub(secs(self.inner.config.session_idle_secs));
        if let Some(ended) = self.store().end_session(phone, offline_before).await? {
            tracing::debug!(%phone, rooms = ended.rooms.len(), "session ended");
            for room in &ended.rooms {
                if let Some(other) = room.other(phone) {
                    self.publish(Delivery::to_user(
                        other.clone(),
                        Event::RoomClosed {
                            room: room.id,
                            by: phone.clone(),
                        },
                    ))
                    .await;
                }
            }
        }
        Ok(())
    }
}
