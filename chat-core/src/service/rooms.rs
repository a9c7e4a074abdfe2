//! Rooms: listing, membership, history, joining, leaving and closing.

use crate::error::{Error, Result};
use crate::event::{Delivery, Event, Except};
use crate::types::{ConnKey, HistoryPage, MessageId, Phone, Room, RoomId, RoomSummary, Session};

use super::{ChatService, HISTORY_LIMIT, JOIN_HISTORY};

impl ChatService {
    /// The caller's live rooms, each with the caller's `unread` count and its newest message
    /// (one store call).
    pub async fn active_rooms(&self, me: &Phone) -> Result<Vec<RoomSummary>> {
        let mut rooms: Vec<RoomSummary> = self
            .store()
            .room_overviews(me)
            .await?
            .into_iter()
            .filter_map(|o| {
                Some(RoomSummary {
                    chat_id: o.room.id,
                    other_user: o.room.other(me)?.clone(),
                    expires_at: o.room.expires_at,
                    unread: o.unread,
                    last_message: o.last_message,
                })
            })
            .collect();
        rooms.sort_by_key(|r| r.expires_at);
        Ok(rooms)
    }

    /// Whether a room exists (for the public chatroom page).
    pub async fn room_exists(&self, room: &str) -> Result<bool> {
        match RoomId::parse(room) {
            Some(id) => Ok(self.store().room(&id).await?.is_some()),
            None => Ok(false),
        }
    }

    /// The room, if `me` is a member: `RoomNotFound` / `Forbidden` otherwise.
    pub async fn member_room(&self, me: &Phone, room: &str) -> Result<Room> {
        self.room_if_member(me, room)
            .await?
            .ok_or(Error::RoomNotFound)
    }

    /// `Forbidden` when the room exists and `me` is not a member; `None` when there is no such
    /// room (a non-UUID id included). Lets callers check field values between the two answers,
    /// as the contract orders them.
    pub(super) async fn room_if_member(&self, me: &Phone, room: &str) -> Result<Option<Room>> {
        let Some(id) = RoomId::parse(room) else {
            return Ok(None);
        };
        match self.store().room(&id).await? {
            Some(room) if !room.has_member(me) => {
                Err(Error::forbidden("you are not a member of this room"))
            }
            found => Ok(found),
        }
    }

    /// A page of a room's history for a member.
    pub async fn history(
        &self,
        me: &Phone,
        room: &str,
        after: Option<&str>,
        limit: Option<&str>,
    ) -> Result<HistoryPage> {
        // The contract's order: identity (403), then field values (400), then state (404).
        let found = self.room_if_member(me, room).await?;
        let limit = HISTORY_LIMIT.apply(limit)?;
        let after = after.map(MessageId::parse).transpose()?;
        let room = found.ok_or(Error::RoomNotFound)?;
        self.store().history(&room.id, after, limit).await
    }

    /// A member joins a room on a socket: the history to send (the last 50, or up to 500 after
    /// `since`). The adapter sends it, starts delivering the room, then calls
    /// [`ChatService::announce_join`].
    pub async fn join_room(
        &self,
        me: &Phone,
        room: &str,
        since: Option<&str>,
    ) -> Result<(RoomId, HistoryPage)> {
        let found = self.room_if_member(me, room).await?;
        let since = since.map(MessageId::parse).transpose()?;
        let room = found.ok_or(Error::RoomNotFound)?;
        let limit = if since.is_some() {
            HISTORY_LIMIT.max
        } else {
            JOIN_HISTORY
        };
        let page = self.store().history(&room.id, since, limit).await?;
        Ok((room.id, page))
    }

    /// Tells the room's sockets (the joiner's included) that `me` joined.
    pub async fn announce_join(&self, me: &Session, room: RoomId) {
        let names = me
            .name
            .iter()
            .map(|n| (me.phone.clone(), n.clone()))
            .collect();
        self.publish(Delivery::to_room(
            room,
            Event::UserJoined {
                room,
                user: me.phone.clone(),
                names,
            },
        ))
        .await;
    }

    /// Tells the room's other sockets that socket `conn` of `me` left.
    pub async fn announce_leave(&self, me: &Phone, room: RoomId, conn: &ConnKey) {
        self.publish(
            Delivery::to_room(
                room,
                Event::UserLeft {
                    room,
                    user: me.clone(),
                },
            )
            .except(Except::Conn(conn.clone())),
        )
        .await;
    }

    /// A member closes a room.
    pub async fn close_room(&self, me: &Phone, room: &str) -> Result<()> {
        let room = self.member_room(me, room).await?;
        let Some(room) = self.store().delete_room(&room.id).await? else {
            return Err(Error::RoomNotFound);
        };
        self.announce_closed(&room, me).await;
        Ok(())
    }

    /// Tells both members that `by` closed `room` (`room_closed`).
    pub(super) async fn announce_closed(&self, room: &Room, by: &Phone) {
        for member in &room.members {
            self.publish(Delivery::to_user(
                member.clone(),
                Event::RoomClosed {
                    room: room.id,
                    by: by.clone(),
                },
            ))
            .await;
        }
    }
}
