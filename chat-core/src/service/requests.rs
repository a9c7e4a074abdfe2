//! Chat requests: sending, answering and withdrawing them.

use crate::error::{Error, Result};
use crate::event::{Delivery, Event};
use crate::store::{NewRoom, RequestOutcome};
use crate::types::{ChatRequest, Millis, Names, Phone, Requests, RoomId};

use super::{Answer, ChatService, RequestSent, secs};

impl ChatService {
    /// `me` asks `to` for a chat.
    pub async fn send_request(&self, me: &Phone, to: &str) -> Result<RequestSent> {
        let to = Phone::parse(to)?;
        if &to == me {
            return Err(Error::SelfRequest);
        }
        // The store checks that `to` is online, that neither blocks the other, the decline
        // cooldown and the pending cap, in the same step as it sends.
        let now = self.now();
        let request = ChatRequest {
            from: me.clone(),
            to: to.clone(),
            created_at: now,
            expires_at: now.saturating_add(secs(self.inner.config.request_ttl_secs)),
        };
        // The store publishes what it did (chat_request, or request_accepted) with it, naming
        // the two.
        let names = self.names(&[me.clone(), to.clone()]).await?;
        match self
            .store()
            .send_request_capped(
                request,
                self.new_room(now, names),
                self.inner.config.max_pending_requests,
            )
            .await?
        {
            RequestOutcome::Sent => {
                self.notify_request(me, &to, now).await;
                Ok(RequestSent::Sent)
            }
            RequestOutcome::Accepted(room) => Ok(RequestSent::Accepted(room.id)),
            RequestOutcome::AlreadyPending => Err(Error::AlreadyPending),
            RequestOutcome::RoomExists(chat_id) => Err(Error::RoomExists { chat_id }),
        }
    }

    fn new_room(&self, now: Millis, names: Names) -> NewRoom {
        NewRoom {
            id: RoomId::generate(),
            created_at: now,
            expires_at: now.saturating_add(secs(self.inner.config.room_ttl_secs)),
            names,
        }
    }

    /// The user's pending requests.
    pub async fn requests(&self, me: &Phone) -> Result<Requests> {
        self.store().requests(me, self.now()).await
    }

    /// `me` answers the request from `requester`: `Some(room)` when accepted.
    pub async fn respond_request(
        &self,
        me: &Phone,
        requester: &str,
        answer: Answer,
    ) -> Result<Option<RoomId>> {
        let requester = Phone::parse(requester)?;
        let accept = answer == Answer::Accept;
        let now = self.now();
        if accept {
            // The store tells both members (request_accepted) with the accept.
            let names = self.names(&[requester.clone(), me.clone()]).await?;
            let room = self
                .store()
                .accept_request(&requester, me, self.new_room(now, names), now)
                .await?
                .ok_or(Error::RequestNotFound)?;
            Ok(Some(room.id))
        } else {
            let cooldown_until = now.saturating_add(secs(self.inner.config.decline_cooldown_secs));
            if !self
                .store()
                .decline_request(&requester, me, now, cooldown_until)
                .await?
            {
                return Err(Error::RequestNotFound);
            }
            let names = self.names_or_none(&[me.clone(), requester.clone()]).await;
            self.publish(Delivery::to_user(
                requester.clone(),
                Event::RequestDeclined {
                    from_user: me.clone(),
                    to_user: requester,
                    names,
                },
            ))
            .await;
            Ok(None)
        }
    }

    /// `me` withdraws the request to `to`.
    pub async fn cancel_request(&self, me: &Phone, to: &str) -> Result<()> {
        let to = Phone::parse(to)?;
        if !self.store().remove_request(me, &to, self.now()).await? {
            return Err(Error::RequestNotFound);
        }
        let names = self.names_or_none(&[me.clone(), to.clone()]).await;
        self.publish(Delivery::to_user(
            to.clone(),
            Event::RequestCancelled {
                from_user: me.clone(),
                to_user: to,
                names,
            },
        ))
        .await;
        Ok(())
    }

    /// Names for an event published after its change was stored: best effort, as the publish
    /// itself (failing the caller would report as failed a change that was made).
    pub(super) async fn names_or_none(&self, phones: &[Phone]) -> Names {
        self.names(phones).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "event published without names");
            Names::new()
        })
    }
}
