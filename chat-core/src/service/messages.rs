//! Messages: checking and storing them, one or a burst, and typing.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::event::{Delivery, Event, Except};
use crate::store::Appended;
use crate::types::{Message, Millis, NewMessage, Phone, RoomId};

use super::{ChatService, MAX_CLIENT_ID_CHARS, Outgoing};

impl ChatService {
    /// Validates and stores a message; the store publishes it to the room.
    pub async fn send_message(
        &self,
        me: &Phone,
        room: &str,
        text: String,
        client_id: Option<String>,
    ) -> Result<Message> {
        let (id, message) = self
            .new_message(me, room, text, client_id, self.now())
            .await?;
        let appended = self
            .store()
            .append_message(&id, message, self.inner.config.history_max)
            .await?;
        if let Appended::New(m) = &appended {
            self.notify_message(m).await;
        }
        Ok(self.count(appended))
    }

    /// Sends a socket's burst of messages: each checked and answered exactly as
    /// [`ChatService::send_message`] would, in the order given, but the valid ones stored with
    /// one store call ([`RoomStore::append_messages`](crate::store::RoomStore::append_messages)), so
    /// they cost one round trip. The results are in the order of `batch`.
    pub async fn send_messages(&self, me: &Phone, batch: Vec<Outgoing>) -> Vec<Result<Message>> {
        let now = self.now();
        // `None`: stored, its answer is the store's next one.
        let mut answers: Vec<Option<Error>> = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        for one in batch {
            match self
                .new_message(me, &one.room, one.text, one.client_id, now)
                .await
            {
                Ok(stored) => {
                    answers.push(None);
                    valid.push(stored);
                }
                Err(e) => answers.push(Some(e)),
            }
        }
        let appended = if valid.is_empty() {
            Vec::new()
        } else {
            self.store()
                .append_messages(valid, self.inner.config.history_max)
                .await
        };
        if self.notifies() {
            // In order, so a recipient's notifications keep the order of the burst.
            for a in &appended {
                if let Ok(Appended::New(m)) = a {
                    self.notify_message(m).await;
                }
            }
        }
        let mut appended = appended.into_iter();
        answers
            .into_iter()
            .map(|refused| match refused {
                Some(e) => Err(e),
                // A store that answered fewer than it was given failed the rest.
                None => Ok(self.count(appended.next().unwrap_or_else(|| {
                    Err(Error::unavailable(
                        "the store answered fewer results than messages",
                    ))
                })?)),
            })
            .collect()
    }

    /// A message checked in the contract's order, with the room it goes to.
    async fn new_message(
        &self,
        me: &Phone,
        room: &str,
        text: String,
        client_id: Option<String>,
        now: Millis,
    ) -> Result<(RoomId, NewMessage)> {
        if let Err(invalid) = self.check_message(&text, client_id.as_deref()) {
            // Off the hot path: a non-member hears 403 before any 400, as the contract orders.
            self.room_if_member(me, room).await?;
            return Err(invalid);
        }
        let id = RoomId::parse(room).ok_or(Error::RoomNotFound)?;
        let message = NewMessage {
            sender: me.clone(),
            message: text,
            timestamp: now,
            client_id,
        };
        Ok((id, message))
    }

    /// The message a store append answered, counted when new.
    fn count(&self, appended: Appended) -> Message {
        match appended {
            Appended::New(m) => {
                self.inner
                    .metrics
                    .messages_total
                    .fetch_add(1, Ordering::Relaxed);
                m
            }
            Appended::Duplicate(m) => m,
        }
    }

    fn check_message(&self, text: &str, client_id: Option<&str>) -> Result<()> {
        if text.trim().is_empty() {
            return Err(Error::EmptyMessage);
        }
        let max = self.inner.config.max_message_chars;
        if text.chars().count() > max {
            return Err(Error::MessageTooLong { max });
        }
        if let Some(c) = client_id {
            let n = c.chars().count();
            if n == 0 || n > MAX_CLIENT_ID_CHARS {
                return Err(Error::bad_request(format!(
                    "client_id must be 1 to {MAX_CLIENT_ID_CHARS} characters"
                )));
            }
        }
        Ok(())
    }

    /// A member is typing (or stopped): told to the other member's sockets joined to the room.
    pub async fn typing(&self, me: &Phone, room: &str, typing: bool) -> Result<()> {
        let room = self.member_room(me, room).await?;
        self.publish(
            Delivery::to_room(
                room.id,
                Event::Typing {
                    room: room.id,
                    user: me.clone(),
                    typing,
                },
            )
            .except(Except::User(me.clone())),
        )
        .await;
        Ok(())
    }
}
