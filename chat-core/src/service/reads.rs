//! Read marks: each member of a room has one, the id of the last message they have read.
//!
//! A mark is one field per member on the room, moved forward by one atomic store step
//! ([`RoomStore::mark_read`](crate::store::RoomStore::mark_read)); reading costs no write per
//! message and counting `unread` no scan of the history beyond
//! [`UNREAD_MAX`](crate::store::UNREAD_MAX) of the other member's messages. Marks end with
//! their room.

use crate::error::{Error, Result};
use crate::event::{Delivery, Event, Except};
use crate::types::{HistoryPage, MessageId, Phone, ReadMarks, RoomId};

use super::ChatService;

impl ChatService {
    /// A member marks the messages of a room read up to `id`, which must be the id of a
    /// message the room holds (`bad_request` otherwise). An id at or before the member's mark
    /// changes nothing and tells nobody (`Ok(false)`); else the mark moves (`Ok(true)`) and
    /// `read` goes to the other member's sockets joined to the room.
    pub async fn mark_read(&self, me: &Phone, room: &str, id: &str) -> Result<bool> {
        let id = match MessageId::parse(id) {
            Ok(id) => id,
            Err(invalid) => {
                // Off the hot path: a non-member hears 403 (or 404) before any 400, as the
                // contract orders them.
                self.room_if_member(me, room).await?;
                return Err(invalid);
            }
        };
        let room = RoomId::parse(room).ok_or(Error::RoomNotFound)?;
        let moved = self.store().mark_read(&room, me, id).await?;
        if moved {
            tracing::debug!(%room, user = %me, %id, "read mark moved");
            self.publish(
                Delivery::to_room(
                    room,
                    Event::Read {
                        room,
                        user: me.clone(),
                        id,
                    },
                )
                .except(Except::User(me.clone())),
            )
            .await;
        }
        Ok(moved)
    }

    /// [`ChatService::join_room`] with both members' read marks, for `room_history`.
    pub async fn join_room_with_reads(
        &self,
        me: &Phone,
        room: &str,
        since: Option<&str>,
    ) -> Result<(RoomId, HistoryPage, ReadMarks)> {
        let (id, page) = self.join_room(me, room, since).await?;
        let marks = self
            .store()
            .read_marks(&id)
            .await?
            .ok_or(Error::RoomNotFound)?;
        Ok((id, page, marks))
    }
}
