//! Sessions: registering, authenticating by token or ticket, the caller-identity rule.

use crate::error::{Error, Result};
use crate::types::{Phone, Session, Token};

use super::{ChatService, MAX_NAME_CHARS, Registration, TICKET_SECS, secs};

impl ChatService {
    /// Registers `phone`, or refreshes the session when `token` is that session's.
    pub async fn register(
        &self,
        phone: &str,
        name: Option<String>,
        token: Option<&str>,
    ) -> Result<Registration> {
        let phone = Phone::parse(phone)?;
        // A name of nothing but white space is no name: there is nothing to show.
        let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if let Some(name) = &name
            && name.chars().count() > MAX_NAME_CHARS
        {
            return Err(Error::bad_request(format!(
                "name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        let refresh = token.and_then(Token::from_client);
        let refresh_digest = refresh.as_ref().map(Token::digest);
        let now = self.now();
        // The store keeps the new token's digest; the token itself goes to the client only.
        let new_token = Token::generate()?;
        let session = Session {
            phone: phone.clone(),
            name,
            token_digest: new_token.digest(),
            created_at: now,
        };
        let attempt = self
            .store()
            .create_session(session.clone(), refresh_digest, self.http_until(now))
            .await;
        let registered = match attempt {
            Err(Error::PhoneInUse) => {
                // The old session may be over but not swept yet: end it by the rules, retry once.
                self.end_session_if_due(&phone).await?;
                self.store()
                    .create_session(session, refresh_digest, self.http_until(now))
                    .await?
            }
            other => other?,
        };
        // A new session has no peers to tell: requests and rooms end with the session before
        // it (and a request needs its target's session). Only a refreshed one may have some.
        if registered.came_online && registered.refreshed {
            self.announce_presence(&phone, true).await;
        }
        // A refresh keeps the session's token: the one the caller presented.
        let token = match refresh {
            Some(token) if registered.refreshed => token,
            _ => new_token,
        };
        Ok(Registration {
            session: registered.session,
            token,
            expires_in: self.inner.config.session_idle_secs,
        })
    }

    /// Authenticates an HTTP API request by its bearer token, and counts it as presence: the
    /// user is online for the HTTP presence window from now. See
    /// [`ChatService::authenticate_socket`] for the WebSocket upgrade, which does not count.
    pub async fn authenticate_request(&self, token: &str) -> Result<Session> {
        let token = Token::from_client(token).ok_or(Error::Unauthorized)?;
        let now = self.now();
        let touched = self
            .store()
            .touch(&token.digest(), self.http_until(now))
            .await?
            .ok_or(Error::Unauthorized)?;
        if touched.came_online {
            self.announce_presence(&touched.session.phone, true).await;
        }
        Ok(touched.session)
    }

    /// Authenticates a WebSocket upgrade by its token. Not counted as presence: the socket
    /// itself is, once [`ChatService::connect`] counts it.
    pub async fn authenticate_socket(&self, token: &str) -> Result<Session> {
        let token = Token::from_client(token).ok_or(Error::Unauthorized)?;
        self.store()
            .session(&token.digest())
            .await?
            .ok_or(Error::Unauthorized)
    }

    /// A single-use ticket for opening a WebSocket as `session`'s user, valid for
    /// [`TICKET_SECS`] on every node: browsers cannot set headers on a WebSocket, and a ticket
    /// in the URL keeps the long-lived token out of URLs, proxy logs and consoles.
    pub async fn ws_ticket(&self, session: &Session) -> Result<Token> {
        let ticket = Token::generate()?;
        let now = self.now();
        self.store()
            .create_ticket(
                &ticket.digest(),
                &session.token_digest,
                now,
                now.saturating_add(secs(TICKET_SECS)),
            )
            .await?;
        Ok(ticket)
    }

    /// Authenticates a WebSocket upgrade by ticket (not counted as presence): takes the
    /// ticket, so it works once. `Unauthorized` for a ticket that is unknown, used, expired, or
    /// whose session ended.
    pub async fn ticket_session(&self, ticket: &str) -> Result<Session> {
        let ticket = Token::from_client(ticket).ok_or(Error::Unauthorized)?;
        self.store()
            .take_ticket(&ticket.digest(), self.now())
            .await?
            .ok_or(Error::Unauthorized)
    }

    /// The caller-identity rule: a field that names the caller, if present, must be them.
    pub fn check_caller(&self, session: &Session, named: Option<&str>) -> Result<()> {
        match named {
            None => Ok(()),
            Some(raw) => match Phone::parse(raw) {
                Ok(p) if p == session.phone => Ok(()),
                _ => Err(Error::forbidden("that phone is not yours")),
            },
        }
    }
}
