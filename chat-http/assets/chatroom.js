// Chatroom page: joins one room over the WebSocket, shows its history and live messages,
// sends messages and typing notices, shows whether the other person is online, and says
// when and why the room ends.
//
// Message order: the server gives every joined socket a room's messages in history order.
// The list `#messages` holds exactly that stream (history, REST catch-up, live
// `receive_message`), deduplicated by id, and `lastId` is the id of its last message, the
// point a rejoin resumes from (`since`). Our own outgoing messages wait in `#pending`
// (greyed until acked) and move into `#messages` when they come back in the stream, so they
// land in the server's order even when the ack arrives before or after the echo. A message
// typed while the connection is down waits in `#pending` and is sent (with its client_id,
// which the server stores once) when the connection is back.
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
  const GROUP_GAP_MS = 5 * 60 * 1000; // one sender's messages closer than this form a group
  const ONLINE_PAGE_LIMIT = 1000;
  const ONLINE_MAX_PAGES = 5;

  const roomId = Chat.roomIdFromLocation();
  let me = Chat.storage.phone();
  let otherUser = null;
  let otherOnline = null; // true | false | null (not known yet)
  let otherTyping = false;
  let roomExpiresAt = null;
  let socket = null;
  let ended = false; // the room is gone or the session ended: the page is read-only
  let unseen = 0; // messages from the other person that arrived while the tab was hidden
  let belowFold = 0; // ... or while the list was scrolled up

  // Join state of the current connection.
  let joined = false; // the join and any catch-up finished; live messages apply directly
  let buffer = null; // live messages held back while a join is syncing (null: not syncing)
  let syncGen = 0; // bumped for every join and disconnect; stale async work compares it
  let joinRetryTimer = null;
  let sinceRejected = false; // the server refused our `since`: join without it once

  let lastId = null;
  const seen = new Set(); // ids of the messages in #messages

  // Read marks: `markSent` is the newest id the server has (or is being told) as read by us;
  // `otherRead` the other member's mark, shown as "Seen" under the last of our messages at
  // or before it.
  let markSent = null;
  let otherRead = null;
  let blocking = false; // we asked the server to block the other member
  const pending = new Map(); // client_id -> { clientId, text, el, state, done, at }

  const scroller = $('scroll');
  const input = $('input');

  // ---------------------------------------------------------------------------------------
  // Header: who, whether they are online or typing, and the tab title

  function renderHeader() {
    const name = otherUser ? Chat.displayName(otherUser) : 'Chat';
    $('room-title').textContent = name;
    let status = '';
    let kind = '';
    if (ended) {
      status = 'Chat ended';
      kind = 'ended';
    } else if (socket && socket.status !== 'connected' && socket.everConnected) {
      status = 'reconnecting\u2026';
      kind = 'unknown';
    } else if (otherTyping) {
      status = 'typing\u2026';
      kind = 'typing';
    } else if (otherOnline === true) {
      status = 'Online';
      kind = 'online';
    } else if (otherOnline === false) {
      status = 'Offline';
      kind = 'offline';
    }
    $('block-user').textContent = otherUser ? 'Block ' + Chat.displayName(otherUser) : 'Block';
    if (otherUser) {
      $('peer-avatar').replaceChildren(Chat.avatar(otherUser,
        kind === 'online' || kind === 'typing' ? 'is-online' : ''));
    }
    // Their phone beside the status when we show their name.
    const phone = otherUser && Chat.nameOf(otherUser) ? otherUser : '';
    const node = $('room-status');
    node.className = 'room-status' + (kind ? ' status-' + kind : '');
    node.dataset.state = kind || 'unknown';
    node.replaceChildren(
      status ? el('span', { className: 'status-word', text: status }) : null,
      status && phone ? ' \u00b7 ' : null,
      phone ? el('span', { className: 'person-phone', text: phone }) : null,
    );
    updateTitle();
  }

  function updateTitle() {
    const name = otherUser ? Chat.displayName(otherUser) : 'Chat';
    Chat.setTitle(otherUser ? name + ' \u00b7 Chat' : 'Chat', unseen);
  }

  function setOnline(value) {
    if (otherOnline === value) return;
    otherOnline = value;
    renderHeader();
  }

  /** What the top of the list says about the room's end. */
  function renderNotice() {
    if (!roomExpiresAt) return;
    $('room-notice').textContent = 'This chat is temporary. It ends at '
      + Chat.formatTime(roomExpiresAt) + ' (' + Chat.formatUntil(roomExpiresAt)
      + '), or sooner if you both leave it for a while. Its messages are deleted when it ends.';
    $('room-notice').title = Chat.formatFull(roomExpiresAt);
  }

  async function loadRoomInfo() {
    try {
      const res = await Chat.api('GET', '/active_chatrooms');
      Chat.learnNames(res);
      const room = (res.chatrooms || []).find((r) => r && r.chat_id === roomId);
      if (room) {
        otherUser = room.other_user;
        roomExpiresAt = room.expires_at || null;
        renderHeader();
        renderNotice();
        loadPresence();
      }
      // Not listed: the join will say whether the room is gone.
    } catch (err) {
      if (isSessionLost(err)) sessionLost();
    }
  }

  /** Whether the other person is online now: looked up once in /online_users; after that,
   *  `presence` and `user_joined` events keep it current. */
  async function loadPresence() {
    if (!otherUser) return;
    const who = otherUser;
    try {
      let cursor = null;
      for (let page = 0; page < ONLINE_MAX_PAGES; page += 1) {
        const res = await Chat.api('GET', '/online_users' + Chat.query({ cursor, limit: ONLINE_PAGE_LIMIT }));
        Chat.learnNames(res);
        if ((res.online_users || []).includes(who)) {
          if (otherOnline === null) setOnline(true);
          return;
        }
        cursor = typeof res.next_cursor === 'string' && res.next_cursor ? res.next_cursor : null;
        if (!cursor) {
          if (otherOnline === null) setOnline(false);
          return;
        }
      }
    } catch (err) {
      if (isSessionLost(err)) sessionLost();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Errors and the end of the room

  let errorTimer = null;
  function showError(text) {
    Chat.showText($('error'), text);
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => Chat.showText($('error'), ''), ERROR_SHOW_MS);
  }

  /** Makes the page read-only and says why, where the message box was. */
  function halt(text, linkText) {
    if (ended) return;
    ended = true;
    Chat.showText($('ended-text'), text);
    $('ended-link').textContent = linkText || 'Back to your chats';
    $('ended').hidden = false;
    $('composer').hidden = true;
    input.disabled = true;
    $('send').disabled = true;
    $('close-room').disabled = true;
    $('block-user').disabled = true;
    $('room-menu').open = false;
    $('room-menu').hidden = true;
    $('load-earlier').hidden = true;
    Chat.showText($('error'), '');
    stopTyping();
    hideTyping();
    clearTimeout(joinRetryTimer);
    if (socket) socket.stop();
    pending.forEach((entry) => markFailed(entry, 'Not sent'));
    updateEmpty();
    renderHeader();
    $('ended-link').focus();
  }

  function isSessionLost(err) {
    return err instanceof Chat.ApiError && err.status === 401;
  }

  /** The server no longer knows our token. After an outage that is a restart of the
   *  in-memory store, which forgot the session and this room with it. */
  function sessionLost(afterOutage) {
    const restart = afterOutage === true || (socket && socket.outage);
    Chat.storage.endSession(restart ? 'restart' : 'expired');
    if (restart) {
      halt('The chat server was restarted, and this chat and your session ended with it. '
        + 'Sign in again on the home page: your number is kept.', 'Sign in again');
    } else {
      halt('Your session has ended. Sign in again on the home page: your number is kept.', 'Sign in again');
    }
  }

  /** Reacts to an error code that means the room is unusable; returns true if it did. */
  function haltOnRoomError(code) {
    if (code === 'room_not_found') {
      halt('This chat no longer exists: it was ended, or its time ran out.');
      return true;
    }
    if (code === 'forbidden') {
      halt('You are not part of this chat.');
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------------------------------
  // Message list

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    belowFold = 0;
    $('jump').hidden = true;
  }

  function updateEmpty() {
    $('empty').hidden = ended || !joined || seen.size > 0 || pending.size > 0;
  }

  function dayKey(ms) {
    const d = new Date(ms);
    return d.getFullYear() + '-' + d.getMonth() + '-' + d.getDate();
  }

  function dayLabel(ms) {
    const d = new Date(ms);
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(ms) === dayKey(today.getTime())) return 'Today';
    if (dayKey(ms) === dayKey(yesterday.getTime())) return 'Yesterday';
    return d.toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric' });
  }

  /** Fills a message line: the bubble sized to its text, its time and an optional status.
   *  `li.dataset` keeps the sender and time for grouping. */
  function fillMessage(li, sender, text, timestamp, extraClass, status) {
    const mine = sender === me;
    const ms = new Date(timestamp).getTime();
    li.className = 'msg ' + (mine ? 'mine' : 'theirs') + (extraClass ? ' ' + extraClass : '');
    li.dataset.sender = String(sender);
    li.dataset.ts = String(Number.isNaN(ms) ? Date.now() : ms);
    const time = el('time', { text: Chat.formatTime(timestamp), title: Chat.formatFull(timestamp) });
    if (typeof timestamp === 'string') time.setAttribute('datetime', timestamp);
    li.replaceChildren(el('div', { className: 'bubble' }, [
      el('span', { className: 'sr-only', text: (mine ? 'You' : Chat.displayName(sender)) + ': ' }),
      el('span', { className: 'text', text: String(text) }),
      el('span', { className: 'meta' }, [
        status ? el('span', { className: 'status', text: status }) : time,
      ]),
    ]));
  }

  /** The message shown just before `li` (across the #messages / #pending boundary). */
  function previousMessage(li) {
    let p = li.previousElementSibling;
    while (p && !p.classList.contains('msg')) p = p.previousElementSibling;
    if (!p && li.parentNode === $('pending')) {
      const all = $('messages').querySelectorAll('li.msg');
      p = all.length ? all[all.length - 1] : null;
    }
    return p;
  }

  /** Groups `li` with the message before it (same sender, same day, close in time) and puts
   *  a day separator before it when the day changes. */
  function decorate(li) {
    const prev = previousMessage(li);
    const ts = Number(li.dataset.ts);
    const sameDay = prev && dayKey(Number(prev.dataset.ts)) === dayKey(ts);
    li.classList.toggle('cont', !!(prev && sameDay && prev.dataset.sender === li.dataset.sender
      && ts - Number(prev.dataset.ts) < GROUP_GAP_MS));
    if (li.parentNode === $('messages') && !sameDay) {
      const before = li.previousElementSibling;
      if (!(before && before.classList.contains('day'))) {
        li.parentNode.insertBefore(el('li', { className: 'day', text: dayLabel(ts) }), li);
      }
    }
  }

  /** Recomputes every group and day separator (after messages were put in front). */
  function regroupAll() {
    $('messages').querySelectorAll('li.day').forEach((d) => d.remove());
    $('messages').querySelectorAll('li.msg').forEach(decorate);
    $('pending').querySelectorAll('li.msg').forEach(decorate);
  }

  /** Counts a message from the other person the reader has not seen yet. */
  function noteUnseen(stick) {
    if (document.hidden) {
      unseen += 1;
      updateTitle();
    }
    if (!stick) {
      belowFold += 1;
      $('jump').textContent = belowFold === 1 ? '1 new message \u2193' : belowFold + ' new messages \u2193';
      $('jump').hidden = false;
    }
  }

  /** Appends one message of the room's stream, in stream order; drops repeats. */
  function applyStream(m, live) {
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
    decorate(li);
    const firstPending = $('pending').querySelector('li.msg');
    if (firstPending) decorate(firstPending);

    if (m.sender !== me) {
      if (otherTyping) hideTyping();
      if (live) noteUnseen(stick);
      if (live && joined) markRead();
    }
    if (joined) renderSeen();
    updateEmpty();
    if (stick || m.sender === me) scrollToBottom();
  }

  // ---------------------------------------------------------------------------------------
  // Read marks

  /** Tells the server we have read up to the newest message shown, when that is further
   *  than what it already has and the reader can see the page. */
  function markRead() {
    if (ended || !joined || document.hidden || !lastId || lastId === markSent) return;
    const id = lastId; // #messages only grows at its end, so a new lastId is further on
    markSent = id;
    socket.request('mark_read', { room: roomId, id }).catch((err) => {
      if (haltOnRoomError(err.code)) return;
      // Not delivered: say it again with the next message or join.
      if (markSent === id && Chat.isTransportError(err)) markSent = null;
    });
  }

  function positionOf(id) {
    const items = $('messages').querySelectorAll('li.msg[data-id]');
    for (let i = items.length - 1; i >= 0; i -= 1) {
      if (items[i].dataset.id === id) return i;
    }
    return -1;
  }

  /** The other member's read mark moved (or was learnt); it never moves back. */
  function setOtherRead(id) {
    if (typeof id !== 'string' || !id || id === otherRead) return;
    if (otherRead) {
      const now = positionOf(otherRead);
      const next = positionOf(id);
      if (now >= 0 && next >= 0 && next < now) return;
    }
    otherRead = id;
    renderSeen();
  }

  /** "Seen" under the last of our messages the other member has read. */
  function renderSeen() {
    const stick = nearBottom();
    $('messages').querySelectorAll('.seen-note').forEach((n) => {
      n.parentNode.classList.remove('has-seen');
      n.remove();
    });
    if (!otherRead) return;
    const items = Array.from($('messages').querySelectorAll('li.msg[data-id]'));
    for (let i = positionOf(otherRead); i >= 0; i -= 1) {
      if (items[i].dataset.sender === me) {
        items[i].classList.add('has-seen');
        items[i].appendChild(el('span', {
          className: 'seen-note',
          text: 'Seen',
          title: (otherUser ? Chat.displayName(otherUser) : 'They') + ' read up to here',
        }));
        if (stick) scroller.scrollTop = scroller.scrollHeight;
        return;
      }
    }
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
      messages.forEach((m) => applyStream(m, true));
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
        Chat.showText(note, 'Earlier messages can\u2019t be shown here.');
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
      regroupAll();
      renderSeen();
      scroller.scrollTop += scroller.scrollHeight - heightBefore; // keep the view where it was
      Chat.showText(note, res.more ? 'Older messages are not shown.' : 'This is the start of the chat.');
    } catch (err) {
      if (isSessionLost(err)) sessionLost();
      else if (!haltOnRoomError(err.code)) showError(Chat.errorText(err, { action: 'load' }));
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
      showError('Couldn\u2019t open the chat: ' + Chat.errorText(err, { action: 'join' }) + ' Retrying\u2026');
      retryJoinLater(err.code === 'rate_limited' ? 3 * JOIN_RETRY_MS : JOIN_RETRY_MS);
      return;
    }
    if (gen !== syncGen) return;
    sinceRejected = false;

    const marks = history.read && typeof history.read === 'object' ? history.read : {};
    let theirMark = null;
    Object.keys(marks).forEach((phone) => {
      const id = typeof marks[phone] === 'string' ? marks[phone] : null;
      if (phone === me) {
        markSent = id;
      } else {
        if (!otherUser) {
          otherUser = phone;
          renderHeader();
        }
        theirMark = id;
      }
    });

    const messages = Array.isArray(history.messages) ? history.messages : [];
    const stick = nearBottom();
    $('messages').setAttribute('aria-busy', 'true'); // one announcement, not fifty
    messages.forEach((m) => applyStream(m, since !== null));
    $('messages').removeAttribute('aria-busy');
    if (stick || since === null) scrollToBottom();

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
          showError('Couldn\u2019t load the messages you missed. Retrying\u2026');
          retryJoinLater(JOIN_RETRY_MS);
        }
        return;
      }
      if (gen !== syncGen) return;
    }

    const held = buffer;
    buffer = null;
    joined = true;
    held.forEach((m) => applyStream(m, true));
    setOtherRead(theirMark);
    renderSeen();
    markRead();
    updateEmpty();
    flushPending();
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  function drawPending(entry, status) {
    fillMessage(entry.el, me, entry.text, new Date(entry.at).toISOString(), 'pending', status);
    decorate(entry.el);
  }

  /** A message the server refused (or that can no longer be sent). */
  function markFailed(entry, reason) {
    if (entry.done) return;
    entry.done = true;
    pending.delete(entry.clientId);
    fillMessage(entry.el, me, entry.text, new Date(entry.at).toISOString(), 'failed', reason);
    decorate(entry.el);
  }

  async function transmit(entry) {
    if (entry.done || ended) return;
    if (!socket.isOpen()) {
      entry.state = 'queued';
      drawPending(entry, 'Waiting for connection\u2026');
      return;
    }
    entry.state = 'sending';
    drawPending(entry, 'Sending\u2026');
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
        drawPending(entry, 'Waiting for connection\u2026');
        if (err.code === 'timeout') setTimeout(() => { if (entry.state === 'queued') transmit(entry); }, JOIN_RETRY_MS);
        return;
      }
      if (haltOnRoomError(err.code)) return;
      // Refused: say why next to the message box and give the text back.
      showError(Chat.errorText(err, { action: 'send' }));
      if (!input.value.trim()) {
        entry.done = true;
        pending.delete(entry.clientId);
        entry.el.remove();
        input.value = entry.text;
        input.focus();
      } else {
        markFailed(entry, 'Not sent');
      }
      updateEmpty();
      return;
    }
    if (entry.done) return; // the echo came first and already placed it
    // Acked, echo still on its way: no longer greyed, stays at the bottom until the echo.
    entry.state = 'acked';
    fillMessage(entry.el, me, entry.text, stored && stored.timestamp, 'acked');
    decorate(entry.el);
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
      at: Date.now(),
    };
    pending.set(entry.clientId, entry);
    $('pending').appendChild(entry.el);
    input.value = '';
    Chat.showText($('error'), '');
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
    otherTyping = true;
    const node = $('typing');
    node.replaceChildren(
      el('span', { className: 'dots', attrs: { 'aria-hidden': 'true' } }, [el('i'), el('i'), el('i')]),
      el('span', { text: Chat.displayName(user) + ' is typing\u2026' }),
    );
    node.hidden = false;
    clearTimeout(typingHideTimer);
    typingHideTimer = setTimeout(hideTyping, TYPING_SHOW_MS);
    renderHeader();
  }

  function hideTyping() {
    clearTimeout(typingHideTimer);
    $('typing').hidden = true;
    $('typing').replaceChildren();
    if (otherTyping) {
      otherTyping = false;
      renderHeader();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Socket events

  function connect() {
    socket = new Chat.Socket();
    socket.onStatus((status) => {
      if (status !== 'connected') {
        invalidateJoin();
        hideTyping();
        typingActive = false;
      }
      $('send').classList.toggle('offline', status !== 'connected');
      renderHeader();
    });
    socket.on('unauthorized', (d) => sessionLost(!!(d && d.afterOutage)));
    socket.on('connection_status', (d) => {
      if (typeof d.phone === 'string') me = d.phone;
      join();
    });

    socket.on('receive_message', (m) => {
      if (!m || m.room !== roomId) return;
      if (buffer) buffer.push(m);
      else if (joined) applyStream(m, true);
      // Otherwise we are not joined: the next join's `since` picks it up.
    });

    socket.on('typing', (d) => {
      if (d.room !== roomId || d.user === me) return;
      if (d.typing) showTyping(d.user);
      else hideTyping();
    });

    socket.on('read', (d) => {
      if (!d || d.room !== roomId || d.user === me) return;
      setOtherRead(d.id);
    });

    socket.on('user_joined', (d) => {
      Chat.learnNames(d);
      if (d.room !== roomId || d.user === me) return;
      if (!otherUser) otherUser = d.user;
      otherOnline = true;
      renderHeader();
    });
    socket.on('user_left', (d) => {
      // They left this page; whether they are still online elsewhere comes as `presence`.
      if (d.room === roomId && d.user !== me) hideTyping();
    });
    socket.on('presence', (d) => {
      const changed = Chat.learnNames(d);
      if (otherUser && d.phone === otherUser) {
        otherOnline = !!d.online;
        if (!d.online) hideTyping();
        renderHeader();
      } else if (changed) {
        renderHeader();
      }
    });

    socket.on('room_closed', (d) => {
      if (d.room !== roomId) return;
      if (blocking && d.by === me) {
        halt(blockedText());
        return;
      }
      halt(d.by === me ? 'You ended this chat. Its messages are gone once you leave this page.'
        : Chat.displayName(d.by) + ' ended this chat. Its messages are gone once you leave this page.');
    });
    socket.on('room_expired', (d) => {
      if (d.room !== roomId) return;
      halt('This chat has ended: its time ran out. Its messages are gone once you leave this page.');
    });

    socket.on('chat_request', (d) => {
      Chat.learnNames(d);
      Chat.toast(Chat.displayName(d.from) + ' wants to chat with you.', {
        kind: 'ok', link: { href: '/', text: 'See request' },
      });
    });

    // Errors for frames sent without ack (typing), or that the server raised by itself.
    socket.on('error', (d) => {
      if (haltOnRoomError(d.code)) return;
      showError(Chat.errorText({ code: d.code, message: d.message }));
    });

    new Chat.ConnectionBanner($('conn-banner'), socket, { // eslint-disable-line no-new
      keeps: 'What you send meanwhile goes out when it\u2019s back.',
    });
    // Whether the other person is online may have changed while we were away.
    socket.on('reconnected', () => {
      otherOnline = null;
      loadPresence();
    });
    socket.start();
  }

  // ---------------------------------------------------------------------------------------
  // Start

  function init() {
    if (!roomId) {
      halt('No chat was given in this link.');
      return;
    }
    if (!Chat.storage.token()) {
      halt('Sign in on the home page to chat.', 'Sign in');
      return;
    }

    $('composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submit();
      input.focus();
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

    // A reader at the bottom stays there when the view changes size (a phone's keyboard
    // opening, a rotated screen, a resized window).
    let stuck = true;
    scroller.addEventListener('scroll', () => {
      stuck = nearBottom();
      if (stuck) {
        belowFold = 0;
        $('jump').hidden = true;
      }
    });
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => { if (stuck) scroller.scrollTop = scroller.scrollHeight; }).observe(scroller);
    }
    $('jump').addEventListener('click', () => {
      scrollToBottom();
      input.focus();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) return;
      markRead();
      if (unseen) {
        unseen = 0;
        updateTitle();
      }
    });

    $('load-earlier').addEventListener('click', async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      await loadEarlier();
      button.disabled = false;
    });

    // The menu closes with Escape and when focus or a click goes elsewhere.
    const menu = $('room-menu');
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && menu.open) {
        menu.open = false;
        menu.querySelector('summary').focus();
      }
    });
    document.addEventListener('click', (ev) => {
      if (menu.open && !menu.contains(ev.target)) menu.open = false;
    });

    // Ending the chat asks first, in a dialog that says what it means.
    const dialog = $('close-dialog');
    $('close-room').addEventListener('click', () => {
      menu.open = false;
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else if (window.confirm('End this chat for both of you? Its messages will be deleted.')) closeRoom();
    });
    dialog.addEventListener('close', () => {
      if (dialog.returnValue === 'confirm') closeRoom();
    });

    // Blocking asks first too, naming who.
    const blockDialog = $('block-dialog');
    $('block-user').addEventListener('click', () => {
      menu.open = false;
      if (!otherUser) {
        showError('This chat is still loading. Try again in a moment.');
        return;
      }
      const who = Chat.displayName(otherUser);
      $('block-dialog-title').textContent = 'Block ' + who + '?';
      $('block-confirm').textContent = 'Block ' + who;
      if (typeof blockDialog.showModal === 'function') blockDialog.showModal();
      else if (window.confirm('Block ' + who + '? This chat ends for both of you.')) blockOther();
    });
    blockDialog.addEventListener('close', () => {
      if (blockDialog.returnValue === 'confirm') blockOther();
    });

    input.disabled = false;
    $('send').disabled = false;
    $('close-room').disabled = false;
    $('block-user').disabled = false;
    input.focus();

    const known = Chat.nameOf(me);
    if (known === null && Chat.storage.name()) Chat.rememberName(me, Chat.storage.name());
    renderHeader();
    loadRoomInfo();
    connect();
  }

  function blockedText() {
    const who = otherUser ? Chat.displayName(otherUser) : 'this person';
    return 'You blocked ' + who + '. This chat has ended for both of you, and ' + who
      + ' can\u2019t send you requests or see you online for as long as your session lasts.';
  }

  async function blockOther() {
    const button = $('block-user');
    if (!otherUser || ended) return;
    button.disabled = true;
    blocking = true;
    try {
      await Chat.api('POST', '/block', { phone: otherUser });
      halt(blockedText());
    } catch (err) {
      blocking = false;
      if (isSessionLost(err)) sessionLost();
      else {
        showError('Couldn\u2019t block ' + Chat.displayName(otherUser) + ': '
          + Chat.errorText(err, { phone: otherUser, action: 'block' }));
        button.disabled = false;
      }
    }
  }

  async function closeRoom() {
    const button = $('close-room');
    button.disabled = true;
    try {
      await Chat.api('POST', '/close_room', { chat_id: roomId });
      halt('You ended this chat. Its messages are gone once you leave this page.');
    } catch (err) {
      if (isSessionLost(err)) sessionLost();
      else if (!haltOnRoomError(err.code)) {
        showError(Chat.errorText(err, { action: 'close' }));
        button.disabled = false;
      }
    }
  }

  init();
})();
