// Home page: registration, who is online, chat requests, active chats and live notifications.
'use strict';

(function () {
  const $ = Chat.$;
  const el = Chat.el;

  const ONLINE_REFRESH_MS = 10000; // who is online
  const LISTS_REFRESH_MS = 30000; // requests and rooms (also kept live by socket events)
  const ONLINE_PAGE_LIMIT = 200;
  const ONLINE_MAX_PAGES = 25; // stop walking /online_users after this many pages
  const MAX_NOTIFICATIONS = 50;

  const state = {
    phone: null, // our normalised phone while registered
    incoming: [], // phones that sent us a pending request
    sent: [], // phones we sent a pending request to
    rooms: [], // [{chat_id, other_user, expires_at}]
    online: [], // other users online, sorted
    navigating: false,
  };

  // Bumped whenever the session starts or ends, so answers that arrive for an older session
  // are dropped instead of drawn.
  let generation = 0;
  let socket = null;
  let intervals = [];

  // ---------------------------------------------------------------------------------------
  // Small helpers

  function isSessionLost(err) {
    return err instanceof Chat.ApiError && err.status === 401;
  }

  /** Shows an API or socket error: in `node` if given, else as a notification. A 401 means
   *  the session is gone, which sends the page back to the register form. */
  function report(err, node) {
    if (isSessionLost(err)) {
      sessionLost();
      return;
    }
    const text = (err && err.message) || 'Something went wrong.';
    if (node) Chat.showText(node, text);
    else notify(text, null, 'error');
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

  // ---------------------------------------------------------------------------------------
  // Notifications

  /** Adds a line to the notifications list, newest first. `link` is {href, text} or null. */
  function notify(text, link, kind) {
    const list = $('notifications');
    const item = el('li', { className: 'note' + (kind ? ' note-' + kind : '') }, [
      el('time', { className: 'muted', text: Chat.formatTime(Date.now()) }),
      ' ',
      el('span', { text }),
      link ? ' ' : null,
      link ? el('a', { href: link.href, text: link.text }) : null,
    ]);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_NOTIFICATIONS) list.removeChild(list.lastChild);
    $('notifications-empty').hidden = true;
  }

  // ---------------------------------------------------------------------------------------
  // Rendering

  function renderRooms() {
    const items = state.rooms.map((room) => el('li', { className: 'item' }, [
      el('a', { href: Chat.roomUrl(room.chat_id), className: 'grow' }, [
        'Chat with ',
        el('span', { className: 'phone', text: room.other_user }),
      ]),
      room.expires_at ? el('span', {
        className: 'muted small',
        text: 'expires ' + Chat.formatTime(room.expires_at),
        title: Chat.formatFull(room.expires_at),
      }) : null,
    ]));
    $('rooms').replaceChildren(...items);
    $('rooms-empty').hidden = items.length > 0;
  }

  function renderRequests() {
    const incoming = state.incoming.map((phone) => {
      const accept = el('button', { type: 'button', text: 'Accept' });
      const decline = el('button', { type: 'button', className: 'secondary', text: 'Decline' });
      accept.addEventListener('click', () => busy(accept, () => respond(phone, 'accept')));
      decline.addEventListener('click', () => busy(decline, () => respond(phone, 'decline')));
      return el('li', { className: 'item' }, [
        el('span', { className: 'phone grow', text: phone }), accept, decline,
      ]);
    });
    $('incoming').replaceChildren(...incoming);
    $('incoming-empty').hidden = incoming.length > 0;

    const sent = state.sent.map((phone) => {
      const cancel = el('button', { type: 'button', className: 'secondary', text: 'Cancel' });
      cancel.addEventListener('click', () => busy(cancel, () => cancelRequest(phone)));
      return el('li', { className: 'item' }, [
        el('span', { className: 'phone grow', text: phone }), cancel,
      ]);
    });
    $('sent').replaceChildren(...sent);
    $('sent-empty').hidden = sent.length > 0;
  }

  /** The action next to an online user depends on what we already share with them. */
  function onlineAction(phone) {
    const room = roomWith(phone);
    if (room) return el('a', { href: Chat.roomUrl(room.chat_id), className: 'button', text: 'Open chat' });
    if (state.sent.includes(phone)) {
      return el('button', { type: 'button', className: 'secondary', text: 'Request sent', disabled: true });
    }
    if (state.incoming.includes(phone)) {
      const accept = el('button', { type: 'button', text: 'Accept request' });
      accept.addEventListener('click', () => busy(accept, () => respond(phone, 'accept')));
      return accept;
    }
    const send = el('button', { type: 'button', text: 'Send request' });
    send.addEventListener('click', () => busy(send, () => sendRequest(phone)));
    return send;
  }

  function renderOnline() {
    const items = state.online.map((phone) => el('li', { className: 'item' }, [
      el('span', { className: 'phone grow', text: phone }),
      onlineAction(phone),
    ]));
    $('online').replaceChildren(...items);
    $('online-empty').hidden = items.length > 0;
  }

  function renderAll() {
    renderRooms();
    renderRequests();
    renderOnline();
  }

  // ---------------------------------------------------------------------------------------
  // Loading

  function setRooms(chatrooms) {
    state.rooms = (Array.isArray(chatrooms) ? chatrooms : [])
      .filter((r) => r && typeof r.chat_id === 'string')
      .sort((a, b) => (a.expires_at || 0) - (b.expires_at || 0));
    renderRooms();
    renderOnline();
  }

  async function loadRooms() {
    const gen = generation;
    try {
      const res = await Chat.api('GET', '/active_chatrooms');
      if (gen === generation) setRooms(res.chatrooms);
    } catch (err) {
      if (gen === generation) report(err);
    }
  }

  async function loadRequests() {
    const gen = generation;
    try {
      const res = await Chat.api('GET', '/incoming_request');
      if (gen !== generation) return;
      state.incoming = [];
      state.sent = [];
      (res.incoming_request || []).forEach((p) => addUnique(state.incoming, p));
      (res.sent_request || []).forEach((p) => addUnique(state.sent, p));
      renderRequests();
      renderOnline();
    } catch (err) {
      if (gen === generation) report(err);
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
        (res.online_users || []).forEach((p) => {
          if (typeof p === 'string' && p !== state.phone) phones.add(p);
        });
        cursor = typeof res.next_cursor === 'string' && res.next_cursor ? res.next_cursor : null;
        pages += 1;
        if (cursor && pages >= ONLINE_MAX_PAGES) truncated = true;
      } while (cursor && !truncated);
      state.online = Array.from(phones).sort();
      renderOnline();
      Chat.showText(note, truncated ? 'Showing the first ' + phones.size + ' users online.' : '');
    } catch (err) {
      if (gen !== generation) return;
      if (isSessionLost(err)) report(err);
      else Chat.showText(note, 'Could not load who is online: ' + err.message);
    } finally {
      onlineLoading = false;
      if (onlineAgain) {
        onlineAgain = false;
        if (gen === generation) loadOnline();
      }
    }
  }

  const refreshOnlineSoon = Chat.debounce(() => { if (state.phone) loadOnline(); }, 500);
  const refreshAll = Chat.debounce(() => {
    if (!state.phone) return;
    loadRooms();
    loadRequests();
    loadOnline();
  }, 300);

  // ---------------------------------------------------------------------------------------
  // Actions

  async function sendRequest(phone) {
    const gen = generation;
    try {
      const res = await Chat.api('POST', '/send_request', { phone2: phone });
      if (gen !== generation) return;
      const m = res.message;
      // A crossed request (they had already asked us) is accepted on the spot.
      if (m && typeof m === 'object' && m.accepted && m.chat_id) {
        notify('You and ' + phone + ' both asked: opening the chat\u2026');
        goToRoom(m.chat_id);
        return;
      }
      addUnique(state.sent, phone);
      renderRequests();
      renderOnline();
      notify('Request sent to ' + phone + '.');
    } catch (err) {
      if (gen !== generation) return;
      if (err.code === 'room_exists' && err.body && typeof err.body.chat_id === 'string') {
        notify('You already have a chat with ' + phone + '.', { href: Chat.roomUrl(err.body.chat_id), text: 'Open it' });
        loadRooms();
        return;
      }
      report(err);
      if (err.code === 'already_pending') loadRequests();
      if (err.code === 'user_not_found') loadOnline();
    }
  }

  async function respond(phone, action) {
    const gen = generation;
    try {
      const res = await Chat.api('POST', '/respond_request', { phone1: phone, action });
      if (gen !== generation) return;
      const m = res.message || {};
      if (action === 'accept' && m.chat_id) {
        notify('Accepted ' + phone + ': opening the chat\u2026');
        goToRoom(m.chat_id);
        return;
      }
      remove(state.incoming, phone);
      renderRequests();
      renderOnline();
      notify('Declined the request from ' + phone + '.');
    } catch (err) {
      if (gen !== generation) return;
      report(err);
      if (err.code === 'request_not_found') loadRequests();
    }
  }

  async function cancelRequest(phone) {
    const gen = generation;
    try {
      await Chat.api('POST', '/cancel_request', { phone2: phone });
      if (gen !== generation) return;
      remove(state.sent, phone);
      renderRequests();
      renderOnline();
      notify('Cancelled your request to ' + phone + '.');
    } catch (err) {
      if (gen !== generation) return;
      report(err);
      if (err.code === 'request_not_found') loadRequests();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Live events

  function roomLabel(roomId) {
    const room = state.rooms.find((r) => r.chat_id === roomId);
    return room ? 'Your chat with ' + room.other_user : 'A chat';
  }

  function createSocket() {
    const s = new Chat.Socket();
    s.onStatus((status) => Chat.renderStatus($('conn'), status));

    // Events may have been missed while disconnected: reload the lists on every (re)connect.
    s.on('connection_status', () => refreshAll());
    s.on('unauthorized', () => sessionLost());

    s.on('chat_request', (d) => {
      addUnique(state.incoming, d.from);
      renderRequests();
      renderOnline();
      notify('Chat request from ' + d.from + '.');
    });
    s.on('request_accepted', (d) => {
      notify('Chat with ' + d.from_user + ' is open: joining\u2026');
      goToRoom(d.chat_id);
    });
    s.on('request_declined', (d) => {
      remove(state.sent, d.from_user);
      renderRequests();
      renderOnline();
      notify(d.from_user + ' declined your request.');
    });
    s.on('request_cancelled', (d) => {
      remove(state.incoming, d.from_user);
      renderRequests();
      renderOnline();
      notify(d.from_user + ' cancelled their request.');
    });
    s.on('presence', (d) => {
      notify(d.phone + (d.online ? ' is online.' : ' went offline.'));
      refreshOnlineSoon();
    });
    s.on('room_closed', (d) => {
      const who = d.by === state.phone ? 'you' : d.by;
      notify(roomLabel(d.room) + ' was closed by ' + who + '.');
      setRooms(state.rooms.filter((r) => r.chat_id !== d.room));
      loadRooms();
    });
    s.on('room_expired', (d) => {
      notify(roomLabel(d.room) + ' has expired.');
      setRooms(state.rooms.filter((r) => r.chat_id !== d.room));
      loadRooms();
    });
    s.on('error', (d) => notify('Error: ' + (d.message || d.code || 'unknown'), null, 'error'));
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
    intervals.forEach(clearInterval);
    intervals = [];
    if (socket) socket.stop();
    socket = null;
  }

  function showRegister(info) {
    $('app-section').hidden = true;
    $('register-section').hidden = false;
    Chat.showText($('reg-error'), '');
    Chat.showText($('reg-info'), info || '');
    Chat.renderStatus($('conn'), 'idle');
  }

  /** Enters the registered view and starts the live connection and refresh timers. */
  async function startSession() {
    stopSession();
    const gen = generation;
    state.phone = Chat.storage.phone();
    $('register-section').hidden = true;
    $('app-section').hidden = false;
    $('me-phone').textContent = state.phone || '';
    const name = Chat.storage.name();
    $('me-name').textContent = name ? ' (' + name + ')' : '';
    Chat.showText($('session-error'), '');
    renderAll();

    socket = createSocket();
    socket.start();
    intervals.push(setInterval(() => { if (!document.hidden) loadOnline(); }, ONLINE_REFRESH_MS));
    intervals.push(setInterval(() => {
      if (document.hidden) return;
      loadRequests();
      loadRooms();
    }, LISTS_REFRESH_MS));

    // Marks us online over HTTP too, and returns our active rooms.
    try {
      const res = await Chat.api('POST', '/reconnect', {});
      if (gen !== generation) return;
      if (res.data && Array.isArray(res.data.chatrooms)) setRooms(res.data.chatrooms);
    } catch (err) {
      if (gen !== generation) return;
      report(err);
      if (isSessionLost(err)) return;
    }
    refreshAll();
  }

  function sessionLost() {
    if (!state.phone && !Chat.storage.token()) return;
    stopSession();
    Chat.storage.clear();
    showRegister('Your session has ended. Register again to continue.');
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
    Chat.storage.save(res.token, typeof res.phone === 'string' ? res.phone : phone, name || '');
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  function init() {
    $('register-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const errorNode = $('reg-error');
      Chat.showText(errorNode, '');
      Chat.showText($('reg-info'), '');
      const phone = $('reg-phone').value.trim();
      const name = $('reg-name').value.trim();
      if (!phone) {
        Chat.showText(errorNode, 'Enter your phone number.');
        return;
      }
      await busy($('reg-submit'), async () => {
        try {
          await register(phone, name);
          startSession();
        } catch (err) {
          Chat.showText(errorNode, err.message || 'Registration failed.');
        }
      });
    });

    $('refresh-session').addEventListener('click', (ev) => busy(ev.currentTarget, async () => {
      const errorNode = $('session-error');
      Chat.showText(errorNode, '');
      try {
        await register(Chat.storage.phone(), Chat.storage.name());
        notify('Session refreshed.');
        startSession();
      } catch (err) {
        Chat.showText(errorNode, err.message || 'Refresh failed.');
      }
    }));

    $('forget').addEventListener('click', () => {
      const ok = window.confirm('Forget this session in this browser?\n\n'
        + 'The server keeps your phone reserved until the session times out, so registering '
        + 'it again may be refused for a while.');
      if (!ok) return;
      stopSession();
      Chat.storage.clear();
      showRegister('Forgotten. You can register again.');
    });

    $('refresh-online').addEventListener('click', (ev) => busy(ev.currentTarget, loadOnline));

    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') refreshAll();
    });

    // Another tab registered or forgot: follow it.
    window.addEventListener('storage', (ev) => {
      if (ev.key !== Chat.storage.KEY_TOKEN && ev.key !== null) return;
      if (Chat.storage.token()) startSession();
      else if (state.phone) {
        stopSession();
        showRegister('This browser forgot the session in another tab.');
      }
    });

    if (Chat.storage.token()) startSession();
    else showRegister('');
  }

  init();
})();
