// Shared helpers for the chat pages: session storage, the JSON API client, the WebSocket
// client and a few DOM helpers. Everything lives on the global `Chat` object; the page scripts
// (home.js, chatroom.js) are loaded after this file.
//
// Invariant: text from users or from the server only ever reaches the page through
// `textContent` (see `Chat.el`), never as markup.
//
// The scripts are kept ASCII-only (non-ASCII text as \u escapes), so they read the same
// whatever charset the server declares for them.
'use strict';

(function () {
  const Chat = {};
  window.Chat = Chat;

  // ---------------------------------------------------------------------------------------
  // Session storage (localStorage, shared by every tab of this origin)

  const KEY_TOKEN = 'chat.token';
  const KEY_PHONE = 'chat.phone';
  const KEY_NAME = 'chat.name';
  const KEY_ENDED = 'chat.ended'; // why the last session ended, for the sign-in form
  const KEY_NAMES = 'chat.names'; // display names seen lately, {phone: name}
  const MAX_NAMES = 500;

  function readKey(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (_) {
      return null; // storage disabled (private mode, policy): behave as "not registered"
    }
  }

  function writeKey(key, value) {
    try {
      if (value === null || value === undefined || value === '') {
        window.localStorage.removeItem(key);
      } else {
        window.localStorage.setItem(key, value);
      }
    } catch (_) {
      /* storage disabled: the session simply does not survive a reload */
    }
  }

  Chat.storage = {
    KEY_TOKEN,
    token: () => readKey(KEY_TOKEN),
    phone: () => readKey(KEY_PHONE),
    name: () => readKey(KEY_NAME),
    save(token, phone, name) {
      writeKey(KEY_TOKEN, token);
      writeKey(KEY_PHONE, phone);
      if (name !== undefined) writeKey(KEY_NAME, name);
      writeKey(KEY_ENDED, null);
    },
    /** The session is gone (the server no longer knows the token). The phone and name stay,
     *  so signing in again is one click; `reason` ('restart' | 'expired') tells the sign-in
     *  form what happened. */
    endSession(reason) {
      writeKey(KEY_TOKEN, null);
      writeKey(KEY_ENDED, reason || 'expired');
    },
    /** Reads and forgets why the last session ended. */
    takeEndReason() {
      const reason = readKey(KEY_ENDED);
      writeKey(KEY_ENDED, null);
      return reason;
    },
    /** Signing out: forgets everything, the phone and name too. */
    clear() {
      // ('chat.seen' was kept by earlier versions of the pages.)
      [KEY_TOKEN, KEY_PHONE, KEY_NAME, KEY_ENDED, KEY_NAMES, 'chat.seen'].forEach((k) => writeKey(k, null));
    },
  };

  // ---------------------------------------------------------------------------------------
  // Display names. The server sends `names: {phone: name}` beside the phones it lists (REST
  // answers and events); they are kept here (and in localStorage, so the chatroom page can
  // title itself before its first answer) and shown instead of phones. A person without a
  // name is shown by their phone.

  const names = new Map();
  (function loadNames() {
    try {
      const saved = JSON.parse(readKey(KEY_NAMES) || '{}');
      if (saved && typeof saved === 'object') {
        Object.keys(saved).forEach((p) => {
          if (typeof saved[p] === 'string' && saved[p]) names.set(p, saved[p]);
        });
      }
    } catch (_) { /* unreadable: start empty */ }
  }());

  const saveNames = () => {
    while (names.size > MAX_NAMES) names.delete(names.keys().next().value);
    writeKey(KEY_NAMES, JSON.stringify(Object.fromEntries(names)));
  };

  /** Learns the `names` object of an answer or event (ignores anything malformed). Returns
   *  true when a name was new or changed, so callers can redraw. */
  Chat.learnNames = function learnNames(obj) {
    if (!obj || typeof obj !== 'object' || !obj.names || typeof obj.names !== 'object') return false;
    let changed = false;
    Object.keys(obj.names).forEach((phone) => {
      const name = obj.names[phone];
      if (typeof name !== 'string' || !name.trim()) return;
      if (names.get(phone) !== name) {
        names.delete(phone); // re-insert: the Map's order is "least recently learned first"
        names.set(phone, name);
        changed = true;
      }
    });
    if (changed) saveNames();
    return changed;
  };

  /** Remembers one name (ours, from the sign-in form). */
  Chat.rememberName = function rememberName(phone, name) {
    if (typeof phone !== 'string' || typeof name !== 'string' || !name.trim()) return;
    names.set(phone, name.trim());
    saveNames();
  };

  /** The name of `phone`, or null when none is known. */
  Chat.nameOf = (phone) => names.get(phone) || null;

  /** What to call someone: their name, else their phone. */
  Chat.displayName = (phone) => names.get(phone) || String(phone || '');

  const HUES = 8;
  /** A round avatar with the person's initials (or the last two digits of their phone),
   *  coloured by their phone so each person keeps one colour. */
  Chat.avatar = function avatar(phone, extraClass) {
    const p = String(phone || '');
    let hash = 0;
    for (let i = 0; i < p.length; i += 1) hash = (hash * 31 + p.charCodeAt(i)) % 1000003;
    const name = names.get(p);
    let initials;
    if (name) {
      const words = name.trim().split(/\s+/).filter(Boolean);
      initials = words.slice(0, 2).map((w) => Array.from(w)[0]).join('').toUpperCase();
    } else {
      initials = p.replace(/\D/g, '').slice(-2) || '?';
    }
    return Chat.el('span', {
      className: 'avatar hue-' + (hash % HUES) + (extraClass ? ' ' + extraClass : ''),
      text: initials,
      attrs: { 'aria-hidden': 'true' },
    });
  };

  /** A person's name over their phone (the phone alone when there is no name). */
  Chat.personLabel = function personLabel(phone, extra) {
    const name = names.get(phone);
    return Chat.el('span', { className: 'person' }, [
      Chat.el('span', { className: 'person-name', text: name || phone }),
      name ? Chat.el('span', { className: 'person-phone', text: phone }) : null,
      extra || null,
    ]);
  };

  // ---------------------------------------------------------------------------------------
  // HTTP API

  /** A failed API call. `status` is the HTTP status (0: the server could not be reached),
   *  `code` the contract's snake_case code, `message` a sentence for people. */
  class ApiError extends Error {
    constructor(status, code, message, body, retryAfter) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.code = code;
      this.body = body || null;
      this.retryAfter = retryAfter; // seconds, from Retry-After on 429, else null
    }
  }
  Chat.ApiError = ApiError;

  /**
   * Calls a JSON API route and returns the parsed body of a successful response.
   * Sends `Authorization: Bearer <token>` with the stored token (or `opts.token`; `null` sends
   * none). Throws ApiError when the request fails or the envelope says `success: false`.
   */
  Chat.api = async function api(method, path, body, opts) {
    const options = opts || {};
    const token = options.token === undefined ? Chat.storage.token() : options.token;
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }

    let res;
    try {
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, 'network_error', 'Could not reach the server.', null, null);
    }

    let json = null;
    try {
      json = await res.json();
    } catch (_) {
      json = null;
    }

    const retryHeader = res.headers.get('Retry-After');
    const retryAfter = retryHeader && /^\d+$/.test(retryHeader) ? Number(retryHeader) : null;

    if (!json || typeof json !== 'object') {
      throw new ApiError(res.status, 'bad_response',
        'The server sent an unexpected answer (HTTP ' + res.status + ').', null, retryAfter);
    }
    if (!res.ok || json.success !== true) {
      const code = typeof json.code === 'string' ? json.code : 'http_' + res.status;
      let message = typeof json.error === 'string' && json.error ? json.error
        : 'Request failed (HTTP ' + res.status + ').';
      if (res.status === 429 && retryAfter !== null) {
        message += ' Try again in ' + retryAfter + ' s.';
      }
      throw new ApiError(res.status, code, message, json, retryAfter);
    }
    return json;
  };

  /** Builds a query string from an object, leaving out null/undefined/'' values. */
  Chat.query = function query(params) {
    const q = new URLSearchParams();
    Object.keys(params).forEach((k) => {
      const v = params[k];
      if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
    });
    const s = q.toString();
    return s ? '?' + s : '';
  };

  /** The page URL of a chatroom. */
  Chat.roomUrl = (chatId) => '/chatroom/' + encodeURIComponent(chatId);

  /** The room id of the current page: `/chatroom/<id>` or `/chatroom?room_id=<id>`. */
  Chat.roomIdFromLocation = function roomIdFromLocation() {
    const m = /^\/chatroom\/([^/]+)\/?$/.exec(window.location.pathname);
    if (m) {
      try {
        return decodeURIComponent(m[1]);
      } catch (_) {
        return m[1];
      }
    }
    const q = new URLSearchParams(window.location.search).get('room_id');
    return q ? q : null;
  };

  /** A random id for `client_id`. crypto.randomUUID exists only in secure contexts
   *  (https or localhost), so plain-http pages on another address use getRandomValues. */
  Chat.randomId = function randomId() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      try {
        return window.crypto.randomUUID();
      } catch (_) { /* fall through */ }
    }
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  };

  // ---------------------------------------------------------------------------------------
  // DOM and formatting helpers

  /**
   * Creates an element. `props` may hold `className`, `text` (set as textContent), `href`,
   * `type`, `title`, `hidden`, `disabled`, `dataset` (object), `attrs` (object of attributes)
   * and `on` (object of event listeners). `children` are nodes or strings (strings become
   * text nodes). Never parses markup.
   */
  Chat.el = function el(tag, props, children) {
    const node = document.createElement(tag);
    const p = props || {};
    if (p.className) node.className = p.className;
    if (p.text !== undefined && p.text !== null) node.textContent = String(p.text);
    if (p.href !== undefined) node.setAttribute('href', p.href);
    if (p.type !== undefined) node.setAttribute('type', p.type);
    if (p.title !== undefined) node.title = p.title;
    if (p.hidden) node.hidden = true;
    if (p.disabled) node.disabled = true;
    if (p.dataset) Object.keys(p.dataset).forEach((k) => { node.dataset[k] = p.dataset[k]; });
    if (p.attrs) Object.keys(p.attrs).forEach((k) => node.setAttribute(k, p.attrs[k]));
    if (p.on) Object.keys(p.on).forEach((k) => node.addEventListener(k, p.on[k]));
    (children || []).forEach((c) => {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return node;
  };

  Chat.$ = (id) => document.getElementById(id);

  /** Sets an element's text and shows it, or hides it when `text` is empty. */
  Chat.showText = function showText(node, text) {
    node.textContent = text || '';
    node.hidden = !text;
  };

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
      && a.getDate() === b.getDate();
  }

  /** Local time of an RFC 3339 timestamp or unix-ms number: "14:05", or with the date when
   *  it is not today. Returns '' for an unreadable value. */
  Chat.formatTime = function formatTime(value) {
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return '';
    const time = d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
    if (sameDay(d, new Date())) return time;
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + time;
  };

  /** Full local date and time, for tooltips. */
  Chat.formatFull = function formatFull(value) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
  };

  /** Collapses repeated calls within `ms` into one trailing call. */
  Chat.debounce = function debounce(fn, ms) {
    let timer = null;
    return function debounced() {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => { timer = null; fn(); }, ms);
    };
  };

  /** "in 5 h 12 min", "in 3 min", "in less than a minute" until a unix-ms time. */
  Chat.formatUntil = function formatUntil(ms) {
    const left = Math.round((Number(ms) - Date.now()) / 60000);
    if (!Number.isFinite(left)) return '';
    if (left < 1) return 'in less than a minute';
    if (left < 60) return 'in ' + left + ' min';
    const h = Math.floor(left / 60);
    const m = left % 60;
    return 'in ' + h + ' h' + (m ? ' ' + m + ' min' : '');
  };

  /** "42 seconds", "3 minutes". */
  Chat.formatSeconds = function formatSeconds(secs) {
    const s = Math.max(1, Math.round(Number(secs) || 0));
    if (s < 90) return s + (s === 1 ? ' second' : ' seconds');
    const m = Math.round(s / 60);
    return m + (m === 1 ? ' minute' : ' minutes');
  };

  /** Sets the tab title, with "(n) " in front while something waits for the person. */
  Chat.setTitle = function setTitle(base, count) {
    document.title = count > 0 ? '(' + count + ') ' + base : base;
  };

  // ---------------------------------------------------------------------------------------
  // Errors in people's words

  /**
   * A sentence for a failed API or socket call. `ctx.phone` is the person the action was
   * about (their name is used when known), `ctx.action` what was being done: 'register',
   * 'request', 'respond', 'cancel', 'send', 'close', 'block', 'join' or 'load'.
   */
  Chat.errorText = function errorText(err, ctx) {
    const c = ctx || {};
    const who = c.phone ? Chat.displayName(c.phone) : null;
    const code = err && err.code;
    const retry = err && err.retryAfter ? Chat.formatSeconds(err.retryAfter) : null;
    switch (code) {
      case 'network_error':
      case 'bad_response':
        return 'Can\u2019t reach the server right now. Check your connection and try again.';
      case 'not_connected':
      case 'disconnected':
      case 'timeout':
        return 'Not connected right now. Try again once the connection is back.';
      case 'invalid_phone':
        return 'That doesn\u2019t look like a phone number. Type it with the country code, '
          + 'for example +1 415 555 0100.';
      case 'self_request':
        return 'That\u2019s your own number. Type the number of the person you want to chat with.';
      case 'user_not_found':
        return (who || 'Nobody with that number') + ' is not online right now. Check the number, '
          + 'or try again when they are online.';
      case 'already_pending':
        return 'You already asked ' + (who || 'them') + '. Waiting for their answer.';
      case 'room_exists':
        return 'You already have a chat with ' + (who || 'them') + '.';
      case 'phone_in_use':
        return 'This number is already signed in, in another tab or browser. Carry on there, or '
          + 'use another number here. A number is freed a few hours after its last use.';
      case 'too_many_blocked':
        return 'You have blocked as many people as you can. Unblock someone before blocking more.';
      case 'too_many_pending':
        return 'You have many requests waiting for an answer. Cancel some before sending more.';
      case 'rate_limited':
        if (c.action === 'request' && who) {
          return who + ' declined your last request. You can ask again in '
            + (retry || 'a while') + '.';
        }
        return 'That was a lot of tries in a short time. Please wait '
          + (retry || 'a moment') + ' and try again.';
      case 'store_unavailable':
        return 'The server is having trouble right now. Please try again in a moment.';
      case 'request_not_found':
        if (c.action === 'cancel') return 'This request was already answered, or it expired.';
        return 'This request is no longer open: ' + (who || 'they') + ' cancelled it, or it expired.';
      case 'room_not_found':
        return 'This chat no longer exists: it was ended, or its time ran out.';
      case 'forbidden':
        return 'You are not part of this chat.';
      case 'message_too_long':
        return 'This message is too long to send. Please split it into shorter ones.';
      case 'empty_message':
        return 'Type a message first.';
      case 'payload_too_large':
        return 'That is too long to send.';
      case 'unauthorized':
        return 'Your session has ended. Please sign in again.';
      case 'bad_request':
        if (c.action === 'register') return 'Please check your name and number and try again.';
        break;
      default:
        break;
    }
    return 'Something went wrong' + (err && err.message ? ' (' + err.message + ')' : '')
      + '. Please try again.';
  };

  // ---------------------------------------------------------------------------------------
  // Toasts: short notices at the bottom of the page, read out by screen readers.

  const TOAST_MS = 6000;
  const MAX_TOASTS = 3;

  /** Shows a notice for a few seconds. `opts.kind`: 'info' | 'ok' | 'error';
   *  `opts.link`: {href, text}. */
  Chat.toast = function toast(text, opts) {
    const o = opts || {};
    let box = document.getElementById('toasts');
    if (!box) {
      box = Chat.el('div', {
        className: 'toasts',
        attrs: { id: 'toasts', role: 'status', 'aria-live': 'polite' },
      });
      document.body.appendChild(box);
    }
    const item = Chat.el('div', { className: 'toast toast-' + (o.kind || 'info') }, [
      Chat.el('span', { text }),
      o.link ? Chat.el('a', { href: o.link.href, text: o.link.text }) : null,
    ]);
    box.appendChild(item);
    while (box.children.length > MAX_TOASTS) box.removeChild(box.firstChild);
    setTimeout(() => item.remove(), TOAST_MS);
  };

  // ---------------------------------------------------------------------------------------
  // The connection banner: says in words when the live connection is lost, when it is back,
  // and offers to retry at once. Nothing shows while all is well.

  const SLOW_CONNECT_MS = 2500; // say "Connecting" only if the first connection is slow
  const BACK_SHOW_MS = 3000; // how long "Reconnected" stays

  Chat.ConnectionBanner = class ConnectionBanner {
    /** `node` is an empty element of the page; `socket` a Chat.Socket. */
    constructor(node, socket, options) {
      this.node = node;
      this.socket = socket;
      // What the page keeps while offline, said in the "lost" banner ('' for nothing).
      this.keeps = (options && options.keeps) || '';
      this.text = Chat.el('span', { className: 'conn-text' });
      this.retry = Chat.el('button', {
        type: 'button',
        className: 'link-button',
        text: 'Retry now',
        on: { click: () => socket.reconnectNow() },
      });
      node.replaceChildren(this.text, this.retry);
      node.setAttribute('role', 'status');
      node.setAttribute('aria-live', 'polite');
      this.timer = null;
      this.lostAt = 0;
      socket.onStatus((status) => this.update(status));
      socket.on('reconnected', () => this.show('back', 'Reconnected. You\u2019re back online.', false));
    }

    show(kind, text, retry) {
      clearTimeout(this.timer);
      this.timer = null;
      this.node.className = 'conn-banner conn-' + kind;
      this.node.dataset.state = kind;
      this.text.textContent = text;
      this.retry.hidden = !retry;
      this.node.hidden = false;
      if (kind === 'back') {
        this.timer = setTimeout(() => this.hide(), BACK_SHOW_MS);
      }
    }

    hide() {
      clearTimeout(this.timer);
      this.timer = null;
      this.node.hidden = true;
      this.node.dataset.state = 'ok';
    }

    update(status) {
      const s = this.socket;
      // While not connected, what the page shows may be out of date: it says so (style.css
      // greys out who is online).
      document.body.classList.toggle('is-offline', status !== 'connected' && s.everConnected);
      if (status === 'disconnected' || (status === 'connecting' && s.outage)) {
        if (s.everConnected) {
          this.show('lost', 'Connection lost. Reconnecting\u2026' + (this.keeps ? ' ' + this.keeps : ''), true);
        } else {
          this.show('lost', 'Can\u2019t connect to the server. Retrying\u2026', true);
        }
      } else if (status === 'connecting') {
        if (this.node.dataset.state !== 'lost') {
          clearTimeout(this.timer);
          this.timer = setTimeout(() => {
            if (this.socket.status === 'connecting') this.show('wait', 'Connecting\u2026', false);
          }, SLOW_CONNECT_MS);
        }
      } else if (status === 'connected') {
        if (this.node.dataset.state !== 'back') this.hide();
      } else {
        this.hide(); // stopped, unauthorized: the page says what happened
      }
    }
  };

  // ---------------------------------------------------------------------------------------
  // WebSocket client

  /** A failed socket request: `code` is the server's error code, or one of the client's own
   *  `not_connected`, `disconnected`, `timeout`. */
  class SocketError extends Error {
    constructor(code, message) {
      super(message || code);
      this.name = 'SocketError';
      this.code = code;
    }
  }
  Chat.SocketError = SocketError;

  /** Errors that say nothing about the request itself, only that the link went away: the
   *  request may or may not have reached the server. */
  Chat.isTransportError = (err) => !!err
    && ['not_connected', 'disconnected', 'timeout'].includes(err.code);

  const REQUEST_TIMEOUT_MS = 20000;
  const HEARTBEAT_EVERY_MS = 30000;
  const HEARTBEAT_TIMEOUT_MS = 10000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const STABLE_AFTER_MS = 10000; // a connection open this long resets the backoff

  /**
   * A WebSocket connection to `/ws?ticket=...` that reconnects with jittered exponential
   * backoff until `stop()` is called.
   *
   * - `request(event, data)` sends `{"event","data","ack"}` with a fresh numeric ack and
   *   resolves with the reply's `data` (the `ack` event, or the reply event the contract names
   *   such as `room_history`), or rejects with a SocketError on the matching `error` frame.
   *   Replies are not also passed to `on()` handlers.
   * - `emit(event, data)` sends without ack (errors then arrive as plain `error` events).
   * - `on(event, fn)` receives every other server event's `data` (`fn(data, frame)`).
   * - `onStatus(fn)` receives 'connecting' | 'connected' | 'disconnected' | 'stopped' |
   *   'unauthorized'. 'connected' is reported on the server's `connection_status`.
   * - Two events of the client's own go to `on()` handlers: 'reconnected' (a connection is back
   *   after one was lost) and 'unauthorized' with `{afterOutage}` (the session is gone; true
   *   when the server had been unreachable first: on the in-memory store that is a restart,
   *   which forgets every session).
   *
   * The server's protocol-level pings are answered by the browser itself. On top of that the
   * client sends an application `ping` now and then, so a connection that died silently
   * (sleeping laptop, lost network) is noticed and replaced.
   */
  class Socket {
    constructor(options) {
      const o = options || {};
      this.getToken = o.getToken || (() => Chat.storage.token());
      // Called when a connection attempt fails before opening. A bad token makes the upgrade
      // fail with HTTP 401, which browsers do not reveal, so ask over HTTP. Resolve to false
      // when the session is gone; reconnecting then stops with status 'unauthorized'.
      this.checkAuth = o.checkAuth || Chat.checkSession;
      this.handlers = new Map();
      this.statusHandlers = [];
      this.pending = new Map(); // ack number -> { resolve, reject, timer }
      this.nextAck = 1;
      this.ws = null;
      this.stopped = true;
      this.attempt = 0;
      this.openedAt = 0;
      this.reconnectTimer = null;
      this.heartbeatTimer = null;
      this.status = 'idle';
      this.connectSeq = 0; // numbers connection attempts; only the latest goes on
      this.phone = null; // from connection_status
      this.everConnected = false; // a connection_status arrived at least once
      this.outage = false; // the connection was lost after having been up, and is not back yet

      // A page being left closes its socket at once, so the server sees the person leave
      // (browsers may otherwise keep a left page, socket and all, in the back/forward cache,
      // and the person would look online while they are gone). A page brought back from
      // that cache connects again.
      this.suspended = false;
      window.addEventListener('pagehide', () => {
        if (this.stopped) return;
        this.suspended = true;
        this.stop('stopped');
      });
      window.addEventListener('pageshow', (ev) => {
        if (!ev.persisted || !this.suspended) return;
        this.suspended = false;
        this.start();
      });

      // Come back quickly when the network or the tab comes back.
      window.addEventListener('online', () => this.reconnectNow());
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState !== 'visible' || this.stopped) return;
        if (this.ws && this.ws.readyState === WebSocket.OPEN) this.heartbeat();
        else this.reconnectNow();
      });
    }

    on(event, fn) {
      if (!this.handlers.has(event)) this.handlers.set(event, []);
      this.handlers.get(event).push(fn);
      return this;
    }

    onStatus(fn) {
      this.statusHandlers.push(fn);
      fn(this.status);
      return this;
    }

    isOpen() {
      return !!this.ws && this.ws.readyState === WebSocket.OPEN;
    }

    start() {
      if (!this.stopped) return;
      this.stopped = false;
      this.attempt = 0;
      this.connect();
    }

    /** Closes the connection for good (until `start()`). */
    stop(status) {
      this.stopped = true;
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      const ws = this.ws;
      this.ws = null;
      this.stopHeartbeat();
      if (ws) {
        try { ws.close(1000); } catch (_) { /* already closing */ }
      }
      this.failPending('disconnected', 'The connection was closed.');
      this.setStatus(status || 'stopped');
    }

    /** Skips the remaining backoff delay if the socket is waiting to reconnect. */
    reconnectNow() {
      if (this.stopped || this.ws) return;
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.connect();
    }

    /** Sends a frame with an ack; resolves with the reply's data. */
    request(event, data, timeoutMs) {
      return new Promise((resolve, reject) => {
        if (!this.isOpen()) {
          reject(new SocketError('not_connected', 'Not connected to the server.'));
          return;
        }
        const ack = this.nextAck++;
        const timer = setTimeout(() => {
          if (this.pending.delete(ack)) {
            reject(new SocketError('timeout', 'The server did not answer in time.'));
          }
        }, timeoutMs || REQUEST_TIMEOUT_MS);
        this.pending.set(ack, { resolve, reject, timer });
        const frame = { event, ack };
        if (data !== undefined) frame.data = data;
        try {
          this.ws.send(JSON.stringify(frame));
        } catch (_) {
          clearTimeout(timer);
          this.pending.delete(ack);
          reject(new SocketError('not_connected', 'Not connected to the server.'));
        }
      });
    }

    /** Sends a frame without ack. Returns false when not connected. */
    emit(event, data) {
      if (!this.isOpen()) return false;
      const frame = { event };
      if (data !== undefined) frame.data = data;
      try {
        this.ws.send(JSON.stringify(frame));
        return true;
      } catch (_) {
        return false;
      }
    }

    // --- internals ---

    setStatus(status) {
      if (this.status === status) return;
      this.status = status;
      this.statusHandlers.forEach((fn) => {
        try { fn(status); } catch (e) { console.error(e); }
      });
    }

    dispatch(event, data, frame) {
      (this.handlers.get(event) || []).forEach((fn) => {
        try { fn(data, frame); } catch (e) { console.error(e); }
      });
    }

    async connect() {
      if (this.stopped) return;
      const token = this.getToken();
      if (!token) {
        this.stop('unauthorized');
        return;
      }
      // Each attempt first asks for a single-use ticket, so the long-lived token never
      // appears in a URL (proxy logs, the browser console when a connection fails). A later
      // attempt (reconnectNow) supersedes one still waiting for its ticket.
      const attempt = ++this.connectSeq;
      this.setStatus('connecting');
      let ticket = '';
      try {
        const res = await Chat.api('POST', '/ws_ticket', {}, { token });
        if (typeof res.ticket === 'string') ticket = res.ticket;
      } catch (err) {
        if (this.stopped || attempt !== this.connectSeq) return;
        if (err instanceof ApiError && err.status === 401) {
          const afterOutage = this.outage;
          this.stop('unauthorized');
          this.dispatch('unauthorized', { afterOutage }, null);
          return;
        }
        if (this.everConnected) this.outage = true;
        this.setStatus('disconnected');
        this.scheduleReconnect(false);
        return;
      }
      if (this.stopped || attempt !== this.connectSeq || this.ws) return;
      if (!ticket) {
        this.scheduleReconnect(false);
        return;
      }
      const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
      const url = scheme + '//' + window.location.host + '/ws?ticket=' + encodeURIComponent(ticket);
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (_) {
        this.scheduleReconnect(false);
        return;
      }
      this.ws = ws;
      this.openedAt = 0;
      this.setStatus('connecting');
      ws.addEventListener('open', () => {
        if (ws !== this.ws) return;
        this.openedAt = Date.now();
        this.startHeartbeat();
      });
      ws.addEventListener('message', (ev) => {
        if (ws === this.ws) this.onFrame(ev.data);
      });
      ws.addEventListener('close', () => this.onClose(ws));
      // 'error' is always followed by 'close'; nothing to do here.
    }

    onFrame(text) {
      if (typeof text !== 'string') return; // the server sends text frames only
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (_) {
        return;
      }
      if (!frame || typeof frame !== 'object' || typeof frame.event !== 'string') return;
      const data = frame.data && typeof frame.data === 'object' ? frame.data : {};

      // A reply to one of our requests: settle its promise, and nothing else.
      if (frame.ack !== undefined && frame.ack !== null) {
        const entry = this.pending.get(frame.ack);
        if (entry) {
          this.pending.delete(frame.ack);
          clearTimeout(entry.timer);
          if (frame.event === 'error') {
            entry.reject(new SocketError(data.code || 'error', data.message || 'Request failed.'));
          } else {
            entry.resolve(frame.data === undefined ? {} : frame.data);
          }
          return;
        }
        // A late reply to a request that already timed out: its caller has moved on.
        if (frame.event === 'ack' || frame.event === 'error') return;
      }

      if (frame.event === 'connection_status') {
        if (typeof data.phone === 'string') this.phone = data.phone;
        const wasOut = this.outage;
        this.outage = false;
        this.everConnected = true;
        this.setStatus('connected');
        this.dispatch(frame.event, data, frame);
        if (wasOut) this.dispatch('reconnected', {}, null);
        return;
      }
      this.dispatch(frame.event, data, frame);
    }

    onClose(ws) {
      if (ws !== this.ws) return; // an old socket we already replaced or stopped
      this.ws = null;
      this.stopHeartbeat();
      this.failPending('disconnected', 'The connection to the server was lost.');
      if (this.stopped) return;
      if (this.everConnected) this.outage = true;
      this.setStatus('disconnected');
      const opened = this.openedAt > 0;
      if (opened && Date.now() - this.openedAt >= STABLE_AFTER_MS) this.attempt = 0;
      this.scheduleReconnect(!opened);
    }

    async scheduleReconnect(neverOpened) {
      if (this.stopped) return;
      if (neverOpened && this.checkAuth) {
        let ok = true;
        try {
          ok = await this.checkAuth();
        } catch (_) {
          ok = true; // cannot tell: keep trying
        }
        if (this.stopped) return;
        if (ok === false) {
          const afterOutage = this.outage;
          this.stop('unauthorized');
          this.dispatch('unauthorized', { afterOutage }, null);
          return;
        }
      }
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      const delay = Math.round(base * (0.5 + Math.random() * 0.5));
      this.attempt = Math.min(this.attempt + 1, 10);
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, delay);
    }

    failPending(code, message) {
      const entries = Array.from(this.pending.values());
      this.pending.clear();
      entries.forEach((entry) => {
        clearTimeout(entry.timer);
        entry.reject(new SocketError(code, message));
      });
    }

    startHeartbeat() {
      this.stopHeartbeat();
      this.heartbeatTimer = setInterval(() => this.heartbeat(), HEARTBEAT_EVERY_MS);
    }

    stopHeartbeat() {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }

    /** Sends an application ping; a connection that does not answer is dropped and replaced. */
    heartbeat() {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      this.request('ping', {}, HEARTBEAT_TIMEOUT_MS).catch((err) => {
        if (err.code !== 'timeout' || ws !== this.ws) return;
        try { ws.close(); } catch (_) { /* ignore */ }
        this.onClose(ws); // do not wait for a close handshake that may never finish
      });
    }
  }
  Chat.Socket = Socket;

  /** Resolves to false when the stored token is no longer accepted (HTTP 401), else true. */
  Chat.checkSession = async function checkSession() {
    if (!Chat.storage.token()) return false;
    try {
      await Chat.api('GET', '/active_chatrooms');
      return true;
    } catch (err) {
      return !(err instanceof ApiError && err.status === 401);
    }
  };
})();
