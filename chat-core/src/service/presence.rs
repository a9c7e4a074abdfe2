//! Presence: sockets, who is online, and telling peers when a user comes or goes.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::event::{Delivery, Event};
use crate::types::{ConnKey, Names, OnlinePage, Phone};

use super::{ChatService, ONLINE_LIMIT};

impl ChatService {
    /// One page of online users, as `me` sees it: without the users `me` blocks or is
    /// blocked by. They are taken out of the store's page, so such a page may be shorter than
    /// the others (even empty) while the walk goes on: the cursor is the store's.
    pub async fn online_users(
        &self,
        me: &Phone,
        cursor: Option<String>,
        limit: Option<&str>,
    ) -> Result<OnlinePage> {
        let limit = ONLINE_LIMIT.apply(limit)?;
        let mut page = self.store().online_page(cursor, limit, self.now()).await?;
        let hidden = self.store().hidden_from(me).await?;
        if !hidden.is_empty() {
            page.phones.retain(|p| !hidden.contains(p));
        }
        Ok(page)
    }

    /// Whether `phone` is online now.
    pub async fn is_online(&self, phone: &Phone) -> Result<bool> {
        let now = self.now();
        Ok(self
            .store()
            .presence(phone)
            .await?
            .is_some_and(|p| p.online_at(now)))
    }

    /// A socket of `phone` opened on this node.
    pub async fn connect(&self, phone: &Phone, conn: &ConnKey) -> Result<()> {
        if self.store().add_conn(phone, conn).await? {
            self.announce_presence(phone, true).await;
        }
        Ok(())
    }

    /// A socket of `phone` closed. Going offline (if this was the last) happens in `tick`.
    pub async fn disconnect(&self, phone: &Phone, conn: &ConnKey) -> Result<()> {
        let now = self.now();
        self.store()
            .remove_conn(phone, conn, now, self.grace_until(now))
            .await
    }

    /// Users who share a pending request or a live room with `phone`.
    async fn peers(&self, phone: &Phone) -> Result<BTreeSet<Phone>> {
        let now = self.now();
        let requests = self.store().requests(phone, now).await?;
        let rooms = self.store().rooms_of(phone).await?;
        let mut peers: BTreeSet<Phone> = requests.incoming.into_iter().collect();
        peers.extend(requests.sent);
        peers.extend(rooms.iter().filter_map(|r| r.other(phone).cloned()));
        peers.remove(phone);
        Ok(peers)
    }

    /// The peers of `phone` that neither blocks nor is blocked by it. The block list is read
    /// only when there is a peer to filter: a user with no request and no room (every new
    /// session, most connects) costs no extra store call.
    async fn visible_peers(&self, phone: &Phone) -> Result<BTreeSet<Phone>> {
        let mut peers = self.peers(phone).await?;
        if !peers.is_empty() {
            let hidden = self.store().hidden_from(phone).await?;
            peers.retain(|p| !hidden.contains(p));
        }
        Ok(peers)
    }

    /// Tells the user's peers. Best effort, like [`ChatService::publish`]: it runs after the
    /// presence change is stored, so failing the caller here would report as failed a change
    /// that was made (a registration answered 503 yet holding the phone, a socket counted yet
    /// never disconnected).
    pub(super) async fn announce_presence(&self, phone: &Phone, online: bool) {
        // Presence goes to peers only (one delivery per peer, never a broadcast), so keeping
        // it between a blocked pair is filtering the peers here, at the source: no socket and
        // no node ever sees it, and no adapter keeps block lists. A block removes the requests
        // and room the two shared in its own atomic step, so they are peers no longer; the
        // filter covers a block landing between reading the peers and publishing.
        let peers = match self.visible_peers(phone).await {
            Ok(peers) if peers.is_empty() => return,
            Ok(peers) => peers,
            Err(e) => {
                tracing::warn!(error = %e, %phone, online, "presence not announced");
                return;
            }
        };
        let names = match self.names(std::slice::from_ref(phone)).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, %phone, "presence announced without a name");
                Names::new()
            }
        };
        for peer in peers {
            self.publish(Delivery::to_user(
                peer,
                Event::Presence {
                    phone: phone.clone(),
                    online,
                    names: names.clone(),
                },
            ))
            .await;
        }
    }

    /// The display names of those of `phones` who have a live session with a name: what REST
    /// answers listing users carry beside the phones.
    pub async fn names(&self, phones: &[Phone]) -> Result<Names> {
        if phones.is_empty() {
            return Ok(Names::new());
        }
        self.store().names(phones).await
    }
}
