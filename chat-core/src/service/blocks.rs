//! Keeping unwanted people out: blocking, unblocking, the list of blocked phones.

use crate::error::{Error, Result};
use crate::event::{Delivery, Event};
use crate::types::Phone;

use super::{ChatService, MAX_BLOCKED};

impl ChatService {
    /// `me` blocks `whom` (any valid phone, registered or not, so blocking reveals nothing).
    /// In the store's one step, `whom`'s pending request to `me` is dropped (silently),
    /// `me`'s to `whom` is cancelled and their room is closed; then the two are told what the
    /// contract says: `request_cancelled` to `whom`, `room_closed` (by `me`) to both.
    pub async fn block(&self, me: &Phone, whom: &str) -> Result<()> {
        let whom = Phone::parse(whom)?;
        if &whom == me {
            return Err(Error::bad_request("you cannot block yourself"));
        }
        let now = self.now();
        let outcome = self
            .store()
            .block(me, &whom, MAX_BLOCKED, now)
            .await?
            // The session ended between authentication and this call.
            .ok_or(Error::Unauthorized)?;
        tracing::debug!(
            %me, %whom,
            dropped = outcome.dropped,
            cancelled = outcome.cancelled,
            room_closed = outcome.room.is_some(),
            "blocked"
        );
        if outcome.cancelled {
            let names = self.names_or_none(&[me.clone(), whom.clone()]).await;
            self.publish(Delivery::to_user(
                whom.clone(),
                Event::RequestCancelled {
                    from_user: me.clone(),
                    to_user: whom.clone(),
                    names,
                },
            ))
            .await;
        }
        if let Some(room) = outcome.room {
            self.announce_closed(&room, me).await;
        }
        Ok(())
    }

    /// `me` no longer blocks `whom`. Nothing the block removed comes back.
    pub async fn unblock(&self, me: &Phone, whom: &str) -> Result<()> {
        let whom = Phone::parse(whom)?;
        if &whom == me {
            return Err(Error::bad_request("you cannot unblock yourself"));
        }
        self.store().unblock(me, &whom).await
    }

    /// The phones `me` blocks.
    pub async fn blocked(&self, me: &Phone) -> Result<Vec<Phone>> {
        self.store().blocked(me).await
    }
}
