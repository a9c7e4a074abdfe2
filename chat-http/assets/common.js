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
    },
    clear() {
      writeKey(KEY_TOKEN, null);
      writeKey(KEY_PHONE, null);
      writeKey(KEY_NAME, null);
    },
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
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
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

  /** Updates a connection-status indicator element from a Socket status word. */
  Chat.renderStatus = function renderStatus(node, status) {
    const labels = {
      idle: 'offline',
      connecting: 'connecting\u2026',
      connected: 'connected',
      disconnected: 'reconnecting\u2026',
      stopped: 'offline',
      unauthorized: 'signed out',
    };
    node.textContent = labels[status] || status;
    node.className = 'conn conn-' + status;
    node.title = 'Live connection: ' + (labels[status] || status);
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
          this.stop('unauthorized');
          this.dispatch('unauthorized', {}, null);
          return;
        }
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
        this.setStatus('connected');
      }
      this.dispatch(frame.event, data, frame);
    }

    onClose(ws) {
      if (ws !== this.ws) return; // an old socket we already replaced or stopped
      this.ws = null;
      this.stopHeartbeat();
      this.failPending('disconnected', 'The connection to the server was lost.');
      if (this.stopped) return;
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
          this.stop('unauthorized');
          this.dispatch('unauthorized', {}, null);
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
