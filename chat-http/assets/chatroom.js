// Chatroom page: joins one room over the WebSocket, shows its history and live messages,
// sends messages and typing notices, and shows when the room ends.
//
// Message order: the server gives every joined socket a room's messages in history order.
// The list `#messages` holds exactly that stream (history, REST catch-up, live
// `receive_message`), deduplicated by id, and `lastId` is the id of its last message, the
// point a rejoin resumes from (`since`). Our own outgoing messages wait in `#pending`
// (greyed until acked) and move into `#messages` when they come back in the stream, so they
// land in the server's order even when the ack arrives before or after the echo.
'use strict';

(function () {
  const $ = Chat.$;
  const el = Chat.el;

  const TYPING_SEND_EVERY_MS = 2000; // resend "typing: true" at most this often
  const TYPING_IDLE_MS = 3000; // send "typing: false" after this long without a keystroke
  const TYPING_SHOW_MS = 5000; // hide someone's typing notice after this long without news
  const CATCHUP_LIMIT = 500;
  const CATCHUP_MAX_PAGES = 100;
  const JOIN_RETRY_MS = 3000;
  const ERROR_SHOW_MS = 8000;

  const roomId = Chat.roomIdFromLocation();
  let me = Chat.storage.phone();
  let otherUser = null;
  let socket = null;
  let ended = false; // the room is gone or the session ended: the page is read-only

  // Join state of the current connection.
  let joined = false; // the join and any catch-up finished; live messages apply directly
  let buffer = null; // live messages held back while a join is syncing (null: not syncing)
  let syncGen = 0; // bumped for every join and disconnect; stale async work compares it
  let joinRetryTimer = null;
  let sinceRejected = false; // the server refused our `since`: join without it once

  let lastId = null;
  const seen = new Set(); // ids of the messages in #messages
  const pending = new Map(); // client_id -> { clientId, text, el, state, done }

  const scroller = $('scroll');
  const input = $('input');

  // ---------------------------------------------------------------------------------------
  // Banners, errors and the header

  let errorTimer = null;
  function showError(text) {
    Chat.showText($('error'), text);
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => Chat.showText($('error'), ''), ERROR_SHOW_MS);
  }

  /** Makes the page read-only with a banner (room closed/expired/gone, no session, ...). */
  function halt(text) {
    if (ended) return;
    ended = true;
    Chat.showText($('banner-text'), text);
    $('banner').hidden = false;
    input.disabled = true;
    $('send').disabled = true;
    $('close-room').disabled = true;
    $('load-earlier').hidden = true;
    stopTyping();
    hideTyping();
    clearTimeout(joinRetryTimer);
    if (socket) socket.stop();
    pending.forEach((entry) => markFailed(entry, 'not sent'));
    updateEmpty();
  }

  function isSessionLost(err) {
    return err instanceof Chat.ApiError && err.status === 401;
  }

  function sessionLost() {
    halt('Your session has ended. Register again on the home page.');
  }

  /** Reacts to an error code that means the room is unusable; returns true if it did. */
  function haltOnRoomError(code) {
    if (code === 'room_not_found') {
      halt('This chat no longer exists (it was closed or has expired).');
      return true;
    }
    if (code === 'forbidden') {
      halt('You are not a member of this chat.');
      return true;
    }
    return false;
  }

  function renderHeader(expiresAt, presence) {
    if (otherUser) {
      $('room-title').textContent = 'Chat with ' + otherUser;
      document.title = 'Chat with ' + otherUser;
    }
    const parts = [];
    if (presence) parts.push(presence);
    if (expiresAt) parts.push('expires ' + Chat.formatTime(expiresAt));
    if (parts.length) $('room-sub').textContent = parts.join(' \u00b7 ');
  }

  let roomExpiresAt = null;
  async function loadHeader() {
    try {
      const res = await Chat.api('GET', '/active_chatrooms');
      const room = (res.chatrooms || []).find((r) => r && r.chat_id === roomId);
      if (room) {
        otherUser = room.other_user;
        roomExpiresAt = room.expires_at || null;
        renderHeader(roomExpiresAt, null);
      }
      // Not listed: the join will say whether the room is gone.
    } catch (err) {
      if (isSessionLost(err)) sessionLost();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Message list

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  function updateEmpty() {
    $('empty').hidden = ended || !joined || seen.size > 0 || pending.size > 0;
  }

  /** Fills a message line: sender (or "you"), local time, text, and an optional status. */
  function fillMessage(li, sender, text, timestamp, extraClass, status) {
    const mine = sender === me;
    li.className = 'msg ' + (mine ? 'mine' : 'theirs') + (extraClass ? ' ' + extraClass : '');
    const time = el('time', { text: Chat.formatTime(timestamp), title: Chat.formatFull(timestamp) });
    if (typeof timestamp === 'string') time.setAttribute('datetime', timestamp);
    li.replaceChildren(
      el('div', { className: 'meta' }, [
        el('span', { className: 'sender', text: mine ? 'you' : String(sender) }),
        ' ',
        time,
        status ? el('span', { className: 'status', text: ' \u00b7 ' + status }) : null,
      ]),
      el('div', { className: 'text', text: String(text) }),
    );
  }

  function systemLine(text) {
    const stick = nearBottom();
    $('messages').appendChild(el('li', { className: 'system' }, [
      el('time', { className: 'muted', text: Chat.formatTime(Date.now()) }),
      ' ',
      el('span', { text }),
    ]));
    if (stick) scrollToBottom();
  }

  /** Appends one message of the room's stream, in stream order; drops repeats. */
  function applyStream(m) {
    if (!m || typeof m.id !== 'string' || seen.has(m.id)) return;
    if (typeof m.room === 'string' && m.room !== roomId) return;
    seen.add(m.id);
    lastId = m.id;
    const stick = nearBottom();

    // Our own message coming back: reuse its pending line.
    let li = null;
    if (typeof m.client_id === 'string' && m.sender === me) {
      const entry = pending.get(m.client_id);
      if (entry) {
        pending.delete(m.client_id);
        entry.done = true;
        li = entry.el;
      }
    }
    li = li || el('li');
    fillMessage(li, m.sender, m.message, m.timestamp);
    li.dataset.id = m.id;
    $('messages').appendChild(li);

    if (m.sender !== me) hideTyping();
    updateEmpty();
    if (stick || m.sender === me) scrollToBottom();
  }

  function roomMessagesPath(params) {
    return '/chatrooms/' + encodeURIComponent(roomId) + '/messages' + Chat.query(params);
  }

  /** After a `since` join answered `more: true`: fetches the rest over REST, in order. */
  async function catchUp(gen) {
    for (let page = 0; page < CATCHUP_MAX_PAGES; page += 1) {
      const res = await Chat.api('GET', roomMessagesPath({ after: lastId, limit: CATCHUP_LIMIT }));
      if (gen !== syncGen) return;
      const messages = Array.isArray(res.messages) ? res.messages : [];
      messages.forEach(applyStream);
      if (!res.more || messages.length === 0) return;
    }
  }

  /** "Show earlier messages": the first join shows the last 50. The API has no "before"
   *  cursor, so this fetches the latest 500 and prepends the ones older than our first. */
  async function loadEarlier() {
    const first = $('messages').querySelector('li[data-id]');
    const note = $('earlier-note');
    if (!first) return;
    try {
      const res = await Chat.api('GET', roomMessagesPath({ limit: CATCHUP_LIMIT }));
      const list = Array.isArray(res.messages) ? res.messages : [];
      const k = list.findIndex((m) => m && m.id === first.dataset.id);
      $('load-earlier').hidden = true;
      if (k < 0) {
        Chat.showText(note, 'Earlier messages cannot be shown here.');
        return;
      }
      const older = list.slice(0, k).filter((m) => typeof m.id === 'string' && !seen.has(m.id));
      const heightBefore = scroller.scrollHeight;
      const frag = document.createDocumentFragment();
      older.forEach((m) => {
        seen.add(m.id);
        const li = el('li');
        fillMessage(li, m.sender, m.message, m.timestamp);
        li.dataset.id = m.id;
        frag.appendChild(li);
      });
      $('messages').insertBefore(frag, $('messages').firstChild);
      scroller.scrollTop += scroller.scrollHeight - heightBefore; // keep the view where it was
      Chat.showText(note, res.more ? 'Older messages are not shown.' : 'This is the start of the chat.');
    } catch (err) {
      if (isSessionLost(err)) sessionLost();
      else if (!haltOnRoomError(err.code)) showError(err.message);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Joining

  function invalidateJoin() {
    syncGen += 1;
    joined = false;
    buffer = null;
    clearTimeout(joinRetryTimer);
    joinRetryTimer = null;
  }

  function retryJoinLater(ms) {
    clearTimeout(joinRetryTimer);
    joinRetryTimer = setTimeout(() => {
      joinRetryTimer = null;
      join();
    }, ms);
  }

  /** join_room with `since` = last seen id; renders the history, catches up over REST when
   *  the history was cut, then applies the live messages that arrived meanwhile. */
  async function join() {
    if (ended || !socket.isOpen()) return;
    invalidateJoin();
    const gen = syncGen;
    buffer = [];
    const since = sinceRejected ? null : lastId;
    const data = { room: roomId };
    if (since) data.since = since;

    let history;
    try {
      history = await socket.request('join_room', data);
    } catch (err) {
      if (gen !== syncGen) return;
      buffer = null;
      if (haltOnRoomError(err.code)) return;
      if (err.code === 'bad_request' && since) {
        sinceRejected = true; // e.g. our last id fell out of the kept history
        join();
        return;
      }
      // A lost connection rejoins on its own when it comes back.
      if (err.code === 'not_connected' || err.code === 'disconnected') return;
      showError('Could not join the chat: ' + err.message + ' Retrying\u2026');
      retryJoinLater(err.code === 'rate_limited' ? 3 * JOIN_RETRY_MS : JOIN_RETRY_MS);
      return;
    }
    if (gen !== syncGen) return;
    sinceRejected = false;

    const messages = Array.isArray(history.messages) ? history.messages : [];
    const stick = nearBottom();
    messages.forEach(applyStream);
    if (stick) scrollToBottom();

    if (since === null) {
      // Without `since`, `more` means older messages exist.
      $('load-earlier').hidden = !history.more || seen.size === 0;
    } else if (history.more) {
      // With `since`, `more` means newer ones exist than the 500 sent: fetch the rest.
      try {
        await catchUp(gen);
      } catch (err) {
        if (gen !== syncGen) return;
        buffer = null;
        if (isSessionLost(err)) sessionLost();
        else if (!haltOnRoomError(err.code)) {
          showError('Could not load missed messages: ' + err.message + ' Retrying\u2026');
          retryJoinLater(JOIN_RETRY_MS);
        }
        return;
      }
      if (gen !== syncGen) return;
    }

    const held = buffer;
    buffer = null;
    joined = true;
    held.forEach(applyStream);
    updateEmpty();
    flushPending();
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  function drawPending(entry, status) {
    fillMessage(entry.el, me, entry.text, new Date().toISOString(), 'pending', status);
  }

  /** A message the server refused (or that can no longer be sent). */
  function markFailed(entry, reason) {
    if (entry.done) return;
    entry.done = true;
    pending.delete(entry.clientId);
    fillMessage(entry.el, me, entry.text, new Date().toISOString(), 'failed', reason);
  }

  async function transmit(entry) {
    if (entry.done || ended) return;
    if (!socket.isOpen()) {
      entry.state = 'queued';
      drawPending(entry, 'waiting for connection\u2026');
      return;
    }
    entry.state = 'sending';
    drawPending(entry, 'sending\u2026');
    let stored;
    try {
      stored = await socket.request('send_message', {
        room: roomId,
        message: entry.text,
        client_id: entry.clientId,
      });
    } catch (err) {
      if (entry.done) return;
      if (Chat.isTransportError(err)) {
        // It may or may not have been stored; resending the same client_id is safe (the
        // server stores it once), so queue it for the next connection.
        entry.state = 'queued';
        drawPending(entry, 'waiting for connection\u2026');
        if (err.code === 'timeout') setTimeout(() => { if (entry.state === 'queued') transmit(entry); }, JOIN_RETRY_MS);
        return;
      }
      // Refused: show why and give the text back.
      showError(err.message);
      if (haltOnRoomError(err.code)) return;
      if (!input.value.trim()) {
        entry.done = true;
        pending.delete(entry.clientId);
        entry.el.remove();
        input.value = entry.text;
        input.focus();
      } else {
        markFailed(entry, 'not sent: ' + err.message);
      }
      updateEmpty();
      return;
    }
    if (entry.done) return; // the echo came first and already placed it
    // Acked, echo still on its way: no longer greyed, stays at the bottom until the echo.
    entry.state = 'acked';
    fillMessage(entry.el, me, entry.text, stored && stored.timestamp, 'acked');
  }

  function flushPending() {
    pending.forEach((entry) => {
      if (entry.state === 'queued') transmit(entry);
    });
  }

  function submit() {
    if (ended) return;
    const text = input.value;
    if (!text.trim()) return;
    const entry = {
      clientId: Chat.randomId(),
      text,
      el: el('li'),
      state: 'queued',
      done: false,
    };
    pending.set(entry.clientId, entry);
    $('pending').appendChild(entry.el);
    input.value = '';
    stopTyping();
    updateEmpty();
    transmit(entry);
    scrollToBottom();
  }

  // ---------------------------------------------------------------------------------------
  // Typing

  let typingSentAt = 0;
  let typingActive = false;
  let typingIdleTimer = null;
  let typingHideTimer = null;

  function onKeystroke() {
    if (ended) return;
    if (!input.value) {
      stopTyping();
      return;
    }
    const now = Date.now();
    if (now - typingSentAt >= TYPING_SEND_EVERY_MS
        && socket.emit('typing', { room: roomId, typing: true })) {
      typingSentAt = now;
      typingActive = true;
    }
    clearTimeout(typingIdleTimer);
    typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(typingIdleTimer);
    typingIdleTimer = null;
    if (typingActive && socket) socket.emit('typing', { room: roomId, typing: false });
    typingActive = false;
    typingSentAt = 0;
  }

  function showTyping(user) {
    Chat.showText($('typing'), user + ' is typing\u2026');
    clearTimeout(typingHideTimer);
    typingHideTimer = setTimeout(hideTyping, TYPING_SHOW_MS);
  }

  function hideTyping() {
    clearTimeout(typingHideTimer);
    Chat.showText($('typing'), '');
  }

  // ---------------------------------------------------------------------------------------
  // Socket events

  function connect() {
    socket = new Chat.Socket();
    socket.onStatus((status) => {
      Chat.renderStatus($('conn'), status);
      if (status !== 'connected') {
        invalidateJoin();
        hideTyping();
        typingActive = false;
      }
    });
    socket.on('unauthorized', sessionLost);
    socket.on('connection_status', (d) => {
      if (typeof d.phone === 'string') me = d.phone;
      join();
    });

    socket.on('receive_message', (m) => {
      if (!m || m.room !== roomId) return;
      if (buffer) buffer.push(m);
      else if (joined) applyStream(m);
      // Otherwise we are not joined: the next join's `since` picks it up.
    });

    socket.on('typing', (d) => {
      if (d.room !== roomId || d.user === me) return;
      if (d.typing) showTyping(d.user);
      else hideTyping();
    });

    socket.on('user_joined', (d) => {
      if (d.room !== roomId || d.user === me) return;
      if (!otherUser) otherUser = d.user;
      systemLine(d.user + ' joined the chat.');
      renderHeader(roomExpiresAt, 'online');
    });
    socket.on('user_left', (d) => {
      if (d.room !== roomId || d.user === me) return;
      hideTyping();
      systemLine(d.user + ' left the chat.');
    });
    socket.on('presence', (d) => {
      if (otherUser && d.phone === otherUser) renderHeader(roomExpiresAt, d.online ? 'online' : 'offline');
    });

    socket.on('room_closed', (d) => {
      if (d.room !== roomId) return;
      halt('This chat was closed by ' + (d.by === me ? 'you' : d.by) + '.');
    });
    socket.on('room_expired', (d) => {
      if (d.room !== roomId) return;
      halt('This chat has expired.');
    });

    socket.on('chat_request', (d) => systemLine('New chat request from ' + d.from + ' (see the home page).'));

    // Errors for frames sent without ack (typing), or that the server raised by itself.
    socket.on('error', (d) => {
      if (d.code === 'room_not_found') {
        haltOnRoomError(d.code);
        return;
      }
      showError(d.message || d.code || 'Something went wrong.');
    });

    socket.start();
  }

  // ---------------------------------------------------------------------------------------
  // Start

  function init() {
    if (!roomId) {
      halt('No chat room was given.');
      return;
    }
    if (!Chat.storage.token()) {
      halt('You need to register before you can chat.');
      return;
    }

    $('composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submit();
    });
    input.addEventListener('keydown', (ev) => {
      // Enter sends, Shift+Enter is a new line; leave Enter alone while an IME is composing.
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        submit();
      }
    });
    input.addEventListener('input', onKeystroke);
    input.addEventListener('blur', stopTyping);

    $('load-earlier').addEventListener('click', async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      await loadEarlier();
      button.disabled = false;
    });

    $('close-room').addEventListener('click', async (ev) => {
      const button = ev.currentTarget;
      if (!window.confirm('Close this chat for both of you? Its messages will be deleted.')) return;
      button.disabled = true;
      try {
        await Chat.api('POST', '/close_room', { chat_id: roomId });
        halt('This chat was closed by you.');
      } catch (err) {
        if (isSessionLost(err)) sessionLost();
        else if (!haltOnRoomError(err.code)) {
          showError(err.message);
          button.disabled = false;
        }
      }
    });

    input.disabled = false;
    $('send').disabled = false;
    $('close-room').disabled = false;
    input.focus();

    loadHeader();
    connect();
  }

  init();
})();
