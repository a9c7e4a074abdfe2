// Home page: signing in, the people online, chat requests (sent by number or from the list)
// and the person's chats, kept live by socket events.
'use strict';

(function () {
  const $ = Chat.$;
  const el = Chat.el;

  // Who is online has no event for people we share nothing with, so it is polled; presence
  // events update the people we do share a request or chat with at once.
  const ONLINE_REFRESH_MS = 4000;
  const LISTS_REFRESH_MS = 30000; // requests (also kept live by socket events)
  // Chats: new messages in them have no event outside the chatroom page, so their unread
  // counts and last lines (which /active_chatrooms reports) are polled.
  const ROOMS_REFRESH_MS = 8000;
  const UNREAD_CAP = 1000; // the server counts exactly up to this, and reports it beyond
  const ONLINE_PAGE_LIMIT = 500;
  const ONLINE_MAX_PAGES = 10; // stop walking /online_users after this many pages
  const FRESH_MS = 15000; // how long a request that just arrived stays highlighted
  const BASE_TITLE = 'Chat';

  const state = {
    phone: null, // our normalised phone while signed in
    incoming: [], // phones that sent us a pending request
    sent: [], // phones we sent a pending request to
    rooms: [], // [{chat_id, other_user, expires_at, unread?, last_message?}]
    online: [], // other people online, by name
    fresh: new Map(), // phone -> time its request arrived live (highlighted for a while)
    navigating: false,
  };

  // Bumped whenever the session starts or ends, so answers that arrive for an older session
  // are dropped instead of drawn.
  let generation = 0;
  let socket = null;
  let banner = null;
  let intervals = [];
  // Chats that ended because we blocked their other member: the block already said so.
  const endedByBlock = new Set();

  // ---------------------------------------------------------------------------------------
  // Small helpers

  function isSessionLost(err) {
    return err instanceof Chat.ApiError && err.status === 401;
  }

  function goToRoom(chatId) {
    if (state.navigating || typeof chatId !== 'string' || !chatId) return;
    state.navigating = true;
    window.location.assign(Chat.roomUrl(chatId));
  }

  function addUnique(list, phone) {
    if (typeof phone === 'string' && phone && !list.includes(phone)) list.push(phone);
  }

  function remove(list, phone) {
    const i = list.indexOf(phone);
    if (i >= 0) list.splice(i, 1);
  }

  function roomWith(phone) {
    return state.rooms.find((r) => r.other_user === phone) || null;
  }

  function byName(a, b) {
    return Chat.displayName(a).localeCompare(Chat.displayName(b));
  }

  /** Runs `fn` with `button` disabled, so a double click sends one request. */
  async function busy(button, fn) {
    if (button.disabled) return;
    button.disabled = true;
    try {
      await fn();
    } finally {
      button.disabled = false;
    }
  }

  /** An error shown next to the thing that caused it (`node`); a lost session instead
   *  returns to the sign-in form. */
  function showErrorAt(node, err, ctx) {
    if (isSessionLost(err)) {
      sessionLost();
      return;
    }
    node.className = node.className.replace(/\bis-(ok|error)\b/g, '').trim() + ' is-error';
    Chat.showText(node, Chat.errorText(err, ctx));
  }

  function showOkAt(node, text) {
    node.className = node.className.replace(/\bis-(ok|error)\b/g, '').trim() + ' is-ok';
    Chat.showText(node, text);
  }

  /** Errors of background loads: a lost session signs out; being offline is the connection
   *  banner's job; anything else is a toast. */
  function reportBackground(err) {
    if (isSessionLost(err)) sessionLost();
    else if (!(err instanceof Chat.ApiError && err.status === 0)) {
      Chat.toast(Chat.errorText(err, { action: 'load' }), { kind: 'error' });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Rendering

  function updateTitle() {
    const unread = state.rooms.reduce((n, r) => n + (Number(r.unread) > 0 ? Number(r.unread) : 0), 0);
    Chat.setTitle(BASE_TITLE, state.incoming.length + unread);
  }

  function renderMe() {
    const name = Chat.nameOf(state.phone);
    $('me-avatar').replaceChildren(Chat.avatar(state.phone));
    $('me-name').textContent = name || state.phone || '';
    $('me-phone').textContent = name ? state.phone : '';
    $('account').hidden = !state.phone;
  }

  function renderRooms() {
    const items = state.rooms.map((room) => {
      const other = room.other_user;
      const unread = Number(room.unread) > 0 ? Number(room.unread) : 0;
      const last = room.last_message && typeof room.last_message === 'object' ? room.last_message : null;
      const line = last && typeof last.message === 'string'
        ? (last.sender === state.phone ? 'You: ' : '') + last.message
        : 'No messages yet';
      const ends = room.expires_at ? 'ends ' + Chat.formatUntil(room.expires_at) : '';
      return el('li', { className: 'item item-link' + (unread ? ' has-unread' : ''), dataset: { room: room.chat_id } }, [
        Chat.avatar(other, online(other) ? 'is-online' : ''),
        el('a', {
          href: Chat.roomUrl(room.chat_id),
          className: 'grow stretched',
          attrs: {
            'aria-label': 'Chat with ' + Chat.displayName(other)
              + (unread ? ', ' + (unread >= UNREAD_CAP ? 'more than ' + (UNREAD_CAP - 1) : unread) + ' unread' : '')
              + (ends ? ', ' + ends : ''),
          },
        }, [
          el('span', { className: 'person-name', text: Chat.displayName(other) }),
          el('span', { className: 'item-sub', text: line }),
        ]),
        el('span', { className: 'item-end' }, [
          ends ? el('span', {
            className: 'ends',
            text: ends,
            title: 'This chat ends ' + Chat.formatFull(room.expires_at) + ', and its messages go with it.',
          }) : null,
          unread ? el('span', {
            className: 'badge unread',
            text: unread >= UNREAD_CAP ? (UNREAD_CAP - 1) + '+' : String(unread),
          }) : null,
        ]),
      ]);
    });
    $('rooms').replaceChildren(...items);
    $('rooms-empty').hidden = items.length > 0;
    updateTitle();
  }

  function renderRequests() {
    const now = Date.now();
    const incoming = state.incoming.map((phone) => {
      const accept = el('button', { type: 'button', className: 'primary small', text: 'Accept' });
      const decline = el('button', { type: 'button', className: 'secondary small', text: 'Decline' });
      const block = el('button', { type: 'button', className: 'ghost small danger-text block', text: 'Block' });
      const error = el('p', { className: 'row-error', attrs: { role: 'alert' }, hidden: true });
      accept.setAttribute('aria-label', 'Accept the request from ' + Chat.displayName(phone));
      decline.setAttribute('aria-label', 'Decline the request from ' + Chat.displayName(phone));
      block.setAttribute('aria-label', 'Block ' + Chat.displayName(phone));
      accept.addEventListener('click', () => busy(accept, () => respond(phone, 'accept', error)));
      decline.addEventListener('click', () => busy(decline, () => respond(phone, 'decline', error)));
      block.addEventListener('click', () => busy(block, () => blockUser(phone, error)));
      const since = state.fresh.get(phone);
      const isFresh = since !== undefined && now - since < FRESH_MS;
      return el('li', { className: 'item request' + (isFresh ? ' fresh' : ''), dataset: { phone } }, [
        Chat.avatar(phone, online(phone) ? 'is-online' : ''),
        el('div', { className: 'grow' }, [
          Chat.personLabel(phone),
          el('span', { className: 'item-sub', text: 'wants to chat with you' }),
        ]),
        el('div', { className: 'actions' }, [accept, decline, block]),
        error,
      ]);
    });
    $('incoming').replaceChildren(...incoming);

    const sent = state.sent.map((phone) => {
      const cancel = el('button', { type: 'button', className: 'ghost small', text: 'Cancel' });
      const error = el('p', { className: 'row-error', attrs: { role: 'alert' }, hidden: true });
      cancel.setAttribute('aria-label', 'Cancel your request to ' + Chat.displayName(phone));
      cancel.addEventListener('click', () => busy(cancel, () => cancelRequest(phone, error)));
      return el('li', { className: 'item request sent', dataset: { phone } }, [
        Chat.avatar(phone, online(phone) ? 'is-online' : ''),
        el('div', { className: 'grow' }, [
          Chat.personLabel(phone),
          el('span', { className: 'item-sub', text: 'Request sent \u00b7 waiting for an answer' }),
        ]),
        el('div', { className: 'actions' }, [cancel]),
        error,
      ]);
    });
    $('sent').replaceChildren(...sent);

    const n = state.incoming.length;
    Chat.showText($('requests-badge'), n ? String(n) : '');
    $('requests-badge').setAttribute('aria-label', n + (n === 1 ? ' new request' : ' new requests'));
    $('requests-section').hidden = incoming.length + sent.length === 0;
    $('requests-section').classList.toggle('has-new', n > 0);
    updateTitle();
  }

  /** Whether `phone` is known to be online (listed, or said so by a presence event). */
  function online(phone) {
    return state.online.includes(phone);
  }

  /** The action next to someone online depends on what we already share with them. Accepting
   *  is done in Requests only, so it has one place. */
  function onlineAction(phone) {
    const room = roomWith(phone);
    if (room) {
      return el('a', { href: Chat.roomUrl(room.chat_id), className: 'button secondary small', text: 'Open chat' });
    }
    if (state.sent.includes(phone)) return el('span', { className: 'tag', text: 'Request sent' });
    if (state.incoming.includes(phone)) {
      return el('a', { href: '#requests-title', className: 'tag tag-new', text: 'Asked you \u2191' });
    }
    const send = el('button', { type: 'button', className: 'secondary small', text: 'Chat' });
    send.setAttribute('aria-label', 'Send a chat request to ' + Chat.displayName(phone));
    send.addEventListener('click', () => busy(send, () => sendRequest(phone, $('online-note'))));
    return send;
  }

  function renderOnline() {
    const items = state.online.map((phone) => el('li', { className: 'item', dataset: { phone } }, [
      Chat.avatar(phone, 'is-online'),
      el('div', { className: 'grow' }, [Chat.personLabel(phone)]),
      onlineAction(phone),
    ]));
    $('online').replaceChildren(...items);
    $('online-empty').hidden = items.length > 0;
    Chat.showText($('online-count'), items.length ? String(items.length) : '');
  }

  function renderAll() {
    renderMe();
    renderRooms();
    renderRequests();
    renderOnline();
  }

  // ---------------------------------------------------------------------------------------
  // Loading

  /** When a room last had news: its last message, else its start (6 h before its end is a
   *  fine stand-in: only the order matters). */
  function lastActivity(room) {
    const m = room.last_message;
    const t = m && typeof m.timestamp === 'string' ? Date.parse(m.timestamp) : NaN;
    return Number.isNaN(t) ? Number(room.expires_at || 0) - 6 * 3600 * 1000 : t;
  }

  function setRooms(chatrooms) {
    // Keep what we already know of each room (unread, last line) until it is looked up again.
    const before = new Map(state.rooms.map((r) => [r.chat_id, r]));
    state.rooms = (Array.isArray(chatrooms) ? chatrooms : [])
      .filter((r) => r && typeof r.chat_id === 'string' && typeof r.other_user === 'string')
      .map((r) => {
        const old = before.get(r.chat_id);
        if (!old || 'unread' in r) return r;
        return Object.assign({}, r, { unread: old.unread, last_message: old.last_message });
      })
      .sort((a, b) => lastActivity(b) - lastActivity(a));
    renderRooms();
    renderOnline();
  }

  async function loadRooms() {
    const gen = generation;
    try {
      const res = await Chat.api('GET', '/active_chatrooms');
      if (gen !== generation) return;
      Chat.learnNames(res);
      const rooms = Array.isArray(res.chatrooms) ? res.chatrooms : [];
      setRooms(rooms);
    } catch (err) {
      if (gen === generation) reportBackground(err);
    }
  }

  async function loadRequests() {
    const gen = generation;
    try {
      const res = await Chat.api('GET', '/incoming_request');
      if (gen !== generation) return;
      Chat.learnNames(res);
      state.incoming = [];
      state.sent = [];
      (res.incoming_request || []).forEach((p) => addUnique(state.incoming, p));
      (res.sent_request || []).forEach((p) => addUnique(state.sent, p));
      renderRequests();
      renderOnline();
    } catch (err) {
      if (gen === generation) reportBackground(err);
    }
  }

  let onlineLoading = false;
  let onlineAgain = false;

  /** Walks every page of /online_users (up to a cap). Overlapping calls are merged. */
  async function loadOnline() {
    if (onlineLoading) {
      onlineAgain = true;
      return;
    }
    onlineLoading = true;
    const gen = generation;
    const note = $('online-note');
    try {
      const phones = new Set();
      let cursor = null;
      let pages = 0;
      let truncated = false;
      do {
        const res = await Chat.api('GET', '/online_users' + Chat.query({ cursor, limit: ONLINE_PAGE_LIMIT }));
        if (gen !== generation) return;
        Chat.learnNames(res);
        (res.online_users || []).forEach((p) => {
          if (typeof p === 'string' && p !== state.phone) phones.add(p);
        });
        cursor = typeof res.next_cursor === 'string' && res.next_cursor ? res.next_cursor : null;
        pages += 1;
        if (cursor && pages >= ONLINE_MAX_PAGES) truncated = true;
      } while (cursor && !truncated);
      state.online = Array.from(phones).sort(byName);
      renderOnline();
      renderRooms();
      renderRequests();
      Chat.showText(note, truncated ? 'Showing the first ' + phones.size + ' people online.' : '');
    } catch (err) {
      if (gen !== generation) return;
      if (isSessionLost(err)) sessionLost();
      // Offline: the connection banner says so; the list stays as it was.
    } finally {
      onlineLoading = false;
      if (onlineAgain) {
        onlineAgain = false;
        if (gen === generation) loadOnline();
      }
    }
  }

  const refreshAll = Chat.debounce(() => {
    if (!state.phone) return;
    loadRooms();
    loadRequests();
    loadOnline();
  }, 200);

  // ---------------------------------------------------------------------------------------
  // Actions

  /** Sends a chat request to `phone` (as typed or as listed); says how it went in
   *  `feedback`, the element next to what was pressed. Returns true when it was sent. */
  async function sendRequest(phone, feedback) {
    const gen = generation;
    const who = knownPhone(phone); // so a typed number can be named
    Chat.showText(feedback, '');
    try {
      const res = await Chat.api('POST', '/send_request', { phone2: phone });
      if (gen !== generation) return false;
      const m = res.message;
      // A crossed request (they had already asked us) is accepted on the spot.
      if (m && typeof m === 'object' && m.accepted && m.chat_id) {
        showOkAt(feedback, Chat.displayName(who) + ' had asked you too. Opening your chat\u2026');
        goToRoom(m.chat_id);
        return true;
      }
      addUnique(state.sent, phone);
      renderRequests();
      renderOnline();
      showOkAt(feedback, 'Request sent to ' + Chat.displayName(who) + '. You\u2019ll join the chat '
        + 'as soon as they accept.');
      loadRequests(); // the server's normalised form of a typed number
      return true;
    } catch (err) {
      if (gen !== generation) return false;
      if (err.code === 'room_exists' && err.body && typeof err.body.chat_id === 'string') {
        Chat.showText(feedback, '');
        feedback.className = 'field-feedback is-ok';
        feedback.replaceChildren(
          document.createTextNode(Chat.errorText(err, { phone: who, action: 'request' }) + ' '),
          el('a', { href: Chat.roomUrl(err.body.chat_id), text: 'Open it' }),
        );
        feedback.hidden = false;
        loadRooms();
        return false;
      }
      showErrorAt(feedback, err, { phone: who, action: 'request' });
      if (err.code === 'already_pending') loadRequests();
      if (err.code === 'user_not_found') loadOnline();
      return false;
    }
  }

  /** A typed number as it is listed somewhere on the page (so it can be named), else as typed. */
  function knownPhone(typed) {
    const digits = String(typed).replace(/[\s()-]/g, '');
    const all = state.online.concat(state.incoming, state.sent, state.rooms.map((r) => r.other_user));
    return all.find((p) => p === digits) || digits;
  }

  async function respond(phone, action, errorNode) {
    const gen = generation;
    Chat.showText(errorNode, '');
    try {
      const res = await Chat.api('POST', '/respond_request', { phone1: phone, action });
      if (gen !== generation) return;
      const m = res.message || {};
      if (action === 'accept' && m.chat_id) {
        Chat.toast('Opening your chat with ' + Chat.displayName(phone) + '\u2026', { kind: 'ok' });
        goToRoom(m.chat_id);
        return;
      }
      remove(state.incoming, phone);
      renderRequests();
      renderOnline();
      Chat.toast('You declined ' + Chat.displayName(phone) + '\u2019s request.');
    } catch (err) {
      if (gen !== generation) return;
      showErrorAt(errorNode, err, { phone, action: 'respond' });
      if (err.code === 'request_not_found') setTimeout(loadRequests, 4000);
    }
  }

  async function cancelRequest(phone, errorNode) {
    const gen = generation;
    Chat.showText(errorNode, '');
    try {
      await Chat.api('POST', '/cancel_request', { phone2: phone });
      if (gen !== generation) return;
      remove(state.sent, phone);
      renderRequests();
      renderOnline();
      Chat.toast('Your request to ' + Chat.displayName(phone) + ' is cancelled.');
    } catch (err) {
      if (gen !== generation) return;
      showErrorAt(errorNode, err, { phone, action: 'cancel' });
      if (err.code === 'request_not_found') setTimeout(loadRequests, 4000);
    }
  }

  /** Blocks `phone` after asking: their request goes, they can no longer ask us, and a chat
   *  with them ends. Says how it went. */
  async function blockUser(phone, errorNode) {
    const who = Chat.displayName(phone);
    const ok = window.confirm('Block ' + who + '?\n\n'
      + 'Their request is removed, they can\u2019t send you requests or see you online, and '
      + 'any chat you have with them ends. This lasts as long as your session.');
    if (!ok) return;
    const gen = generation;
    Chat.showText(errorNode, '');
    try {
      await Chat.api('POST', '/block', { phone });
      if (gen !== generation) return;
      remove(state.incoming, phone);
      remove(state.sent, phone);
      state.online = state.online.filter((p) => p !== phone);
      state.fresh.delete(phone);
      state.rooms.filter((r) => r.other_user === phone).forEach((r) => endedByBlock.add(r.chat_id));
      setRooms(state.rooms.filter((r) => r.other_user !== phone));
      renderRequests();
      Chat.toast('You blocked ' + who + '. They can\u2019t send you requests or see you online.', { kind: 'ok' });
      loadRooms();
      loadOnline();
    } catch (err) {
      if (gen !== generation) return;
      showErrorAt(errorNode, err, { phone, action: 'block' });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Live events

  function roomLabel(roomId) {
    const room = state.rooms.find((r) => r.chat_id === roomId);
    return room ? 'Your chat with ' + Chat.displayName(room.other_user) : 'A chat';
  }

  function createSocket() {
    const s = new Chat.Socket();

    // Events may have been missed while disconnected: reload the lists on every (re)connect.
    s.on('connection_status', () => refreshAll());
    s.on('unauthorized', (d) => sessionLost(d && d.afterOutage ? 'restart' : 'expired'));

    s.on('chat_request', (d) => {
      Chat.learnNames(d);
      if (typeof d.from !== 'string') return;
      addUnique(state.incoming, d.from);
      state.fresh.set(d.from, Date.now());
      setTimeout(renderRequests, FRESH_MS + 100); // drop the highlight
      renderRequests();
      renderOnline();
      Chat.toast(Chat.displayName(d.from) + ' wants to chat with you.', { kind: 'ok' });
    });
    s.on('request_accepted', (d) => {
      Chat.learnNames(d);
      Chat.toast(Chat.displayName(d.from_user) + ' is in: opening your chat\u2026', { kind: 'ok' });
      goToRoom(d.chat_id);
    });
    s.on('request_declined', (d) => {
      Chat.learnNames(d);
      remove(state.sent, d.from_user);
      renderRequests();
      renderOnline();
      Chat.toast(Chat.displayName(d.from_user) + ' declined your request.');
    });
    s.on('request_cancelled', (d) => {
      Chat.learnNames(d);
      remove(state.incoming, d.from_user);
      renderRequests();
      renderOnline();
      Chat.toast(Chat.displayName(d.from_user) + ' cancelled their request.');
    });
    s.on('presence', (d) => {
      const changed = Chat.learnNames(d);
      if (typeof d.phone !== 'string' || d.phone === state.phone) return;
      const was = online(d.phone);
      if (d.online && !was) state.online = state.online.concat([d.phone]).sort(byName);
      if (!d.online && was) state.online = state.online.filter((p) => p !== d.phone);
      if (was !== !!d.online || changed) renderAll();
    });
    s.on('room_closed', (d) => {
      if (d.by === state.phone && endedByBlock.delete(d.room)) {
        loadRooms();
        return;
      }
      const who = d.by === state.phone ? 'you' : Chat.displayName(d.by);
      Chat.toast(roomLabel(d.room) + ' was ended by ' + who + '.');
      setRooms(state.rooms.filter((r) => r.chat_id !== d.room));
      loadRooms();
    });
    s.on('room_expired', (d) => {
      Chat.toast(roomLabel(d.room) + ' has ended: its time ran out.');
      setRooms(state.rooms.filter((r) => r.chat_id !== d.room));
      loadRooms();
    });
    s.on('error', (d) => Chat.toast(Chat.errorText({ code: d.code, message: d.message }), { kind: 'error' }));
    return s;
  }

  // ---------------------------------------------------------------------------------------
  // Session lifecycle

  function stopSession() {
    generation += 1;
    state.phone = null;
    state.incoming = [];
    state.sent = [];
    state.rooms = [];
    state.online = [];
    state.fresh.clear();
    intervals.forEach(clearInterval);
    intervals = [];
    if (socket) socket.stop();
    socket = null;
    Chat.setTitle(BASE_TITLE, 0);
  }

  const END_NOTICES = {
    restart: 'The chat server was restarted and your session ended with it. Your number is '
      + 'filled in below: press \u201cStart chatting\u201d to sign in again.',
    expired: 'Your session has ended. Your number is filled in below: press \u201cStart '
      + 'chatting\u201d to sign in again.',
    other_tab: 'You signed out in another tab.',
  };

  /** Shows the sign-in form, filled with the number and name this browser last used. */
  function showRegister(reason) {
    $('app-section').hidden = true;
    $('account').hidden = true;
    $('register-section').hidden = false;
    Chat.showText($('reg-error'), '');
    $('reg-phone').removeAttribute('aria-invalid');
    const notice = $('reg-notice');
    Chat.showText(notice, END_NOTICES[reason] || '');
    $('welcome-title').textContent = Chat.storage.phone() ? 'Welcome back' : 'Welcome to Chat';
    notice.className = 'notice' + (reason === 'restart' ? ' notice-warn' : '');
    if (!$('reg-phone').value) $('reg-phone').value = Chat.storage.phone() || '';
    if (!$('reg-name').value) $('reg-name').value = Chat.storage.name() || '';
    const focus = $('reg-phone').value ? $('reg-submit') : $('reg-name');
    focus.focus();
  }

  /** Enters the signed-in view and starts the live connection and refresh timers. */
  async function startSession() {
    stopSession();
    const gen = generation;
    state.phone = Chat.storage.phone();
    Chat.rememberName(state.phone, Chat.storage.name() || '');
    $('register-section').hidden = true;
    $('app-section').hidden = false;
    renderAll();

    socket = createSocket();
    if (banner) banner.hide();
    banner = new Chat.ConnectionBanner($('conn-banner'), socket);
    socket.start();
    intervals.push(setInterval(() => { if (!document.hidden) loadOnline(); }, ONLINE_REFRESH_MS));
    intervals.push(setInterval(() => { if (!document.hidden) loadRooms(); }, ROOMS_REFRESH_MS));
    intervals.push(setInterval(() => { if (!document.hidden) loadRequests(); }, LISTS_REFRESH_MS));

    // Marks us online over HTTP too, and returns our chats.
    try {
      const res = await Chat.api('POST', '/reconnect', {});
      if (gen !== generation) return;
      Chat.learnNames(res);
      if (res.data && Array.isArray(res.data.chatrooms)) {
        Chat.learnNames(res.data);
        setRooms(res.data.chatrooms);
      }
    } catch (err) {
      if (gen !== generation) return;
      if (isSessionLost(err)) {
        sessionLost();
        return;
      }
    }
    refreshAll();
  }

  /** The server no longer knows our token. `reason`: 'restart' when it had been unreachable
   *  just before (the in-memory store forgets every session when it restarts). */
  function sessionLost(reason) {
    if (!state.phone && !Chat.storage.token()) return;
    const why = reason || (socket && socket.outage ? 'restart' : 'expired');
    stopSession();
    Chat.storage.endSession(why);
    showRegister(Chat.storage.takeEndReason());
  }

  /** POST /register_user. With a stored token this is a refresh of that session; if the
   *  stored token is no longer known (401) it is dropped and the phone registered afresh. */
  async function register(phone, name) {
    const body = { phone };
    if (name) body.name = name;
    let res;
    try {
      res = await Chat.api('POST', '/register_user', body);
    } catch (err) {
      if (!(isSessionLost(err) && Chat.storage.token())) throw err;
      res = await Chat.api('POST', '/register_user', body, { token: null });
    }
    if (typeof res.token !== 'string' || !res.token) {
      throw new Chat.ApiError(200, 'bad_response', 'The server sent no token.', res, null);
    }
    const normalised = typeof res.phone === 'string' ? res.phone : phone;
    Chat.storage.save(res.token, normalised, name || '');
    if (name) Chat.rememberName(normalised, name);
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  function init() {
    $('register-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const errorNode = $('reg-error');
      const phoneInput = $('reg-phone');
      Chat.showText(errorNode, '');
      phoneInput.removeAttribute('aria-invalid');
      const phone = phoneInput.value.trim();
      const name = $('reg-name').value.trim();
      if (!phone) {
        Chat.showText(errorNode, 'Type your phone number, with the country code.');
        phoneInput.setAttribute('aria-invalid', 'true');
        phoneInput.focus();
        return;
      }
      await busy($('reg-submit'), async () => {
        try {
          await register(phone, name);
          Chat.showText($('reg-notice'), '');
          startSession();
          $('main').focus(); // the form is gone: keyboard and screen reader go on from the top
        } catch (err) {
          Chat.showText(errorNode, Chat.errorText(err, { action: 'register' }));
          if (err.code === 'invalid_phone' || err.code === 'phone_in_use') {
            phoneInput.setAttribute('aria-invalid', 'true');
            phoneInput.focus();
          }
        }
      });
    });

    $('request-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const input = $('request-phone');
      const feedback = $('request-feedback');
      input.removeAttribute('aria-invalid');
      const phone = input.value.trim();
      if (!phone) {
        showErrorAt(feedback, { code: 'invalid_phone' }, {});
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
      await busy($('request-submit'), async () => {
        if (await sendRequest(phone, feedback)) input.value = '';
        else if (!feedback.classList.contains('is-ok')) {
          input.setAttribute('aria-invalid', 'true');
          input.focus();
        }
      });
    });

    $('sign-out').addEventListener('click', () => {
      const ok = window.confirm('Sign out of Chat in this browser?\n\n'
        + 'Your number stays reserved for you until your session times out, so signing in '
        + 'with it elsewhere may be refused for a while.');
      if (!ok) return;
      stopSession();
      Chat.storage.clear();
      $('reg-phone').value = '';
      $('reg-name').value = '';
      showRegister('');
    });

    // Someone who comes back to the tab sees fresh lists at once.
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') refreshAll();
    });

    // Another tab signed in or out: follow it.
    window.addEventListener('storage', (ev) => {
      if (ev.key !== Chat.storage.KEY_TOKEN && ev.key !== null) return;
      if (Chat.storage.token()) startSession();
      else if (state.phone) {
        stopSession();
        showRegister(Chat.storage.takeEndReason() || 'other_tab');
      }
    });

    if (Chat.storage.token()) startSession();
    else showRegister(Chat.storage.takeEndReason() || '');
  }

  init();
})();
