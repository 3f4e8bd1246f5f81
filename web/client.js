// wshub browser client: a plain ES module, no build step, no dependency.
// Speaks PROTOCOL.md version 1 over `wshub.json`, or receives over a
// Server-Sent Events stream (`transport: 'sse'`, section 12) where a
// WebSocket cannot open; `'auto'` falls back to SSE by itself.
//
//   import { WsHub } from '/client.js';
//   const hub = WsHub.connect('/ws', {
//     rooms: ['scans'],
//     onEvent: (event) => console.log(event.room, event.seq, event.type, event.payload),
//     onStatus: (s) => console.log(s.state, s.code, s.reason),
//   });
//   await hub.publish('scans', 'note', { text: 'hi' });

/** Close codes after which the client does not reconnect (PROTOCOL.md section 6). */
const FINAL_CLOSE_CODES = new Set([1008, 4003]);

/** Error codes the client makes itself, as opposed to those the hub sends. */
const LOCAL_CODES = new Set(['not_connected', 'timeout', 'disconnected', 'closed', 'unsupported_transport']);

/** Transports a client may be asked for. */
const TRANSPORTS = new Set(['websocket', 'sse', 'auto']);

/** WebSocket attempts in a row that never opened before `auto` tries SSE. */
const AUTO_FALLBACK_AFTER = 2;

const DEFAULTS = {
  backoffMs: 1000,
  maxBackoffMs: 30_000,
  stableMs: 10_000,
  connectTimeoutMs: 10_000,
  requestTimeoutMs: 10_000,
};

/**
 * An error reply from the hub, or a request the client could not complete.
 *
 * `code` is the hub's `error.code` (`forbidden`, `invalid_message`,
 * `reserved_type`, …) or one of the client's own: `not_connected` (no open
 * connection when called), `timeout` (no reply within `requestTimeoutMs`),
 * `disconnected` (the connection closed before the reply), `closed`
 * (`close()` was called) and `unsupported_transport` (a call an SSE stream
 * cannot make: `publish`, `presence`, `request`, `rpc`; publish over HTTP). `details` holds the rest of the hub's error
 * payload (such as `room` or `oldest_seq`) and the reply's `ref` and
 * `correlation_id`.
 */
export class WsHubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {Record<string, unknown>} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'WsHubError';
    /** @type {string} */
    this.code = code;
    /** @type {Record<string, unknown>} */
    this.details = details;
  }

  /** Whether the hub sent this error (rather than the client making it). */
  get fromHub() {
    return !LOCAL_CODES.has(this.code);
  }
}

/**
 * @typedef {object} HubMessage A message as the hub sent it (PROTOCOL.md section 3).
 * @property {string} type
 * @property {Record<string, any>} payload
 * @property {string|null} correlation_id
 * @property {string} timestamp
 * @property {string} [id] Events only.
 * @property {string|null} [room] Events only: null for events to everyone or to a user.
 * @property {number} [seq] Room events only.
 * @property {string} [ref] Replies only.
 */

/**
 * @typedef {object} Status What `onStatus` receives.
 * @property {'connecting'|'open'|'closed'} state
 * @property {number|null} code The close code (`closed` only; 1006 when the
 *   connection failed or was cut, 4000 when the client's heartbeat watchdog
 *   gave up on it).
 * @property {string} reason The close reason, or what went wrong.
 * @property {number} attempt Connection attempts since the last stable
 *   connection, from 1; it drives the backoff.
 * @property {boolean} [final] `closed` only: true when the client will not
 *   reconnect (close code 4003 or 1008, or `close()` was called).
 * @property {number} [retryInMs] `closed` only, when not final: the delay
 *   before the next attempt.
 * @property {'websocket'|'sse'} transport The transport of this attempt
 *   (with `transport: 'auto'`, `sse` once the client has fallen back).
 * @property {string} [connectionId] `open` only: from the welcome.
 * @property {string} [epoch] `open` only: the hub's epoch.
 * @property {boolean} [epochChanged] `open` only: true when the hub restarted
 *   since the previous connection (a new epoch). Its history is gone, so the
 *   rooms were joined again without `since`: events published while the tab
 *   was disconnected are not replayed, and seq counters start again.
 * @property {string[]} [historyUnavailable] A notice while `open`: these
 *   rooms were rejoined but the hub no longer held the events missed while
 *   disconnected (the gap was longer than its history), so some are lost.
 *   Live events continue.
 * @property {WsHubError} [error] A notice while `open`: an error not tied to
 *   a call of yours (`rate_limited`, or the automatic re-subscription refused).
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string|null|(() => string|null|Promise<string|null>)} [token]
 *   A JWT sent as `?token=`; a function is called before every attempt, so
 *   an expired token (close 4001) is not replayed.
 * @property {string[]} [rooms] Rooms to join (and to rejoin on every reconnect).
 * @property {(event: HubMessage) => void} [onEvent] Every event (hub message
 *   with an `id`, `health_status` included), exactly once and in seq order
 *   per room across reconnects.
 * @property {(status: Status) => void} [onStatus] Connection state changes and notices.
 * @property {number} [backoffMs] First reconnect delay (default 1000), doubled
 *   per failed attempt, jittered to between half and all of it.
 * @property {number} [maxBackoffMs] Cap of the reconnect delay (default 30000).
 * @property {number} [stableMs] A connection open this long resets the
 *   backoff (default 10000).
 * @property {number} [connectTimeoutMs] Give up on an attempt with no welcome
 *   after this long (default 10000).
 * @property {number} [requestTimeoutMs] Default reply timeout of requests (default 10000).
 * @property {'websocket'|'sse'|'auto'} [transport] How to reach the hub
 *   (default `websocket`). `sse` receives over `GET /sse` instead: events
 *   (room, user and everyone), `health_status`, resume without gaps across
 *   reconnects, `subscribe`/`unsubscribe` (each reopens the stream with the
 *   new rooms, resuming the others), the watchdog and the token function
 *   all work; `publish`, `presence`, `request` (and so `rpc`) reject with
 *   `unsupported_transport`, since a stream cannot send (publish with
 *   `POST /api/events`). An admin `DELETE` and a shutdown end a stream
 *   alike, so an SSE client reconnects after both (no 4003 is final).
 *   `auto` starts with WebSocket and falls back to SSE for good when
 *   WebSocket fails to open twice in a row while `/health` answers (a
 *   proxy that breaks upgrades).
 * @property {string} [sseUrl] The stream's URL (default: the WebSocket URL
 *   with `/ws` replaced by `/sse`, over `http(s):`).
 */

/**
 * A connection to a wshub hub that keeps itself alive: it reconnects with
 * capped, jittered exponential backoff after any close but 4003 and 1008,
 * rejoins its rooms resuming from the last seq seen in each (so no event is
 * lost or repeated while the hub still holds the gap), and reconnects when
 * nothing arrives for the advertised `heartbeat_timeout_ms`.
 */
export class WsHub {
  /**
   * Starts connecting and returns the client at once.
   * @param {string} [url] The hub's WebSocket URL; relative URLs and
   *   `http(s):` resolve against the page (default `/ws`).
   * @param {ConnectOptions} [options]
   * @returns {WsHub}
   */
  static connect(url = '/ws', options = {}) {
    const hub = new WsHub(url, options);
    hub.#start();
    return hub;
  }

  #url;
  #sseUrl;
  #healthUrl;
  /** @type {'websocket'|'sse'} */
  #transport;
  #auto;
  /** WebSocket attempts in a row that never opened (for `auto`). */
  #unopened = 0;
  /** @type {AbortController|null} the open SSE stream's request */
  #stream = null;
  /** The current stream's welcome said the epoch changed. */
  #streamEpochChanged = false;
  /** The current stream sent `token_expired`: its end is a 4001. */
  #streamExpired = false;
  #token;
  #onEvent;
  #onStatus;
  #config;
  /** @type {WebSocket|null} */
  #ws = null;
  /** @type {'connecting'|'open'|'closed'} */
  #state = 'closed';
  #stopped = false;
  #attempt = 0;
  #generation = 0;
  #openedAt = 0;
  #lastMessageAt = 0;
  #heartbeatTimeoutMs = 0;
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #retryTimer;
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #watchdogTimer;
  /** @type {string|null} */
  #epoch = null;
  /** @type {string|null} */
  #connectionId = null;
  /** Rooms wanted, kept across reconnects. */
  #rooms = new Set();
  /** @type {Map<string, number>} last seq seen (or skipped) per room, this epoch */
  #lastSeq = new Map();
  /** @type {Map<string, {message: any, resolve: Function, reject: Function, timer: any, keep: boolean}>} */
  #pending = new Map();
  #nextRef = 0;
  #onOnline = () => {
    if (this.#retryTimer !== undefined) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      this.#open();
    }
  };

  /**
   * Use {@link WsHub.connect}.
   * @param {string} url
   * @param {ConnectOptions} options
   */
  constructor(url, options) {
    this.#url = toWebSocketUrl(url);
    const { sse, health } = siblingUrls(this.#url);
    this.#sseUrl = options.sseUrl ? new URL(options.sseUrl, globalThis.location?.href).href : sse;
    this.#healthUrl = health;
    const transport = options.transport ?? 'websocket';
    if (!TRANSPORTS.has(transport)) throw new TypeError(`transport must be 'websocket', 'sse' or 'auto', not ${transport}`);
    this.#auto = transport === 'auto';
    this.#transport = transport === 'sse' ? 'sse' : 'websocket';
    this.#token = options.token;
    this.#onEvent = options.onEvent;
    this.#onStatus = options.onStatus;
    this.#config = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) {
      if (typeof options[key] === 'number') this.#config[key] = options[key];
    }
    for (const room of options.rooms ?? []) this.#rooms.add(room);
  }

  /** `connecting`, `open` or `closed`. */
  get state() {
    return this.#state;
  }

  /** `websocket` or `sse`: how the client reaches the hub now. */
  get transport() {
    return this.#transport;
  }

  /** This connection's ID from the welcome, or null before the first. */
  get connectionId() {
    return this.#connectionId;
  }

  /** The hub's epoch from the latest welcome, or null before the first. */
  get epoch() {
    return this.#epoch;
  }

  /** The rooms joined (or to join on the next connection). */
  get rooms() {
    return [...this.#rooms];
  }

  /** The last seq seen per room, as sent in `since` on a reconnect. */
  get positions() {
    return Object.fromEntries(this.#lastSeq);
  }

  /**
   * Joins rooms, now and on every reconnect. Resolves with the `subscribed`
   * payload, or with null when not connected (the rooms are joined on
   * connecting) or when the connection closed first (likewise).
   * Rejects with a {@link WsHubError} when the hub refuses (for instance
   * `forbidden`, `invalid_message`); the rooms are then not kept.
   * @param {string|string[]} rooms
   * @returns {Promise<Record<string, any>|null>}
   */
  subscribe(rooms) {
    const list = toList(rooms);
    const added = list.filter((room) => !this.#rooms.has(room));
    for (const room of list) this.#rooms.add(room);
    if (this.#transport === 'sse') return this.#reopenStream(added.length > 0);
    if (this.#state !== 'open') return Promise.resolve(null);
    return this.#request({ type: 'subscribe', rooms: list }, { keep: true }).then(
      (reply) => reply?.payload ?? null,
      (err) => {
        if (err.fromHub) {
          for (const room of added) this.#forget(room);
        }
        throw err;
      },
    );
  }

  /**
   * Leaves rooms. Resolves with the `unsubscribed` payload, or null when
   * not connected (nothing to leave) or when the connection closed first.
   * @param {string|string[]} rooms
   * @returns {Promise<Record<string, any>|null>}
   */
  unsubscribe(rooms) {
    const list = toList(rooms);
    const had = list.some((room) => this.#rooms.has(room));
    for (const room of list) this.#forget(room);
    if (this.#transport === 'sse') return this.#reopenStream(had);
    if (this.#state !== 'open') return Promise.resolve(null);
    return this.#request({ type: 'unsubscribe', rooms: list }, { keep: true }).then(
      (reply) => reply?.payload ?? null,
    );
  }

  /**
   * Publishes an event to a room's other subscribers (never back to this
   * connection). Resolves with the `published` payload, `{id, seq, recipients}`.
   * @param {string} room
   * @param {string} event The event's type.
   * @param {Record<string, unknown>} [payload]
   * @returns {Promise<{id: string, seq: number, recipients: number}>}
   */
  publish(room, event, payload = {}) {
    return this.#request({ type: 'publish', room, event, payload }).then((reply) => reply.payload);
  }

  /**
   * Asks who is in a room. Resolves with its members, `[{connection_id, user}]`.
   * @param {string} room
   * @returns {Promise<Array<{connection_id: string, user: string|null}>>}
   */
  presence(room) {
    return this.#request({ type: 'presence', room }).then((reply) => reply.payload.members);
  }

  /**
   * Asks the app behind the hub (its `rpc_hook`, PROTOCOL.md section 10).
   * Resolves with the app's `result`; rejects with a {@link WsHubError}
   * carrying the app's own code when it refuses, `hook_unavailable` when
   * it cannot answer, or `rate_limited` past 16 waiting calls.
   * @param {string} method 1 to 128 characters.
   * @param {unknown} [params] Any JSON value (default null).
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<unknown>}
   */
  rpc(method, params = null, options = {}) {
    return this.#request({ type: 'rpc', method, params }, options).then((reply) => reply.payload.result);
  }

  /**
   * Sends any client message (PROTOCOL.md section 4) and resolves with the
   * reply carrying the same `ref` (one is made if the message has none).
   * Rejects with a {@link WsHubError}: the hub's `error` reply, or
   * `not_connected`, `timeout`, `disconnected`, `closed`.
   * @param {Record<string, unknown>} message
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<HubMessage>}
   */
  request(message, options = {}) {
    return this.#request(message, options);
  }

  /** Closes the connection for good: no reconnect, timers cleared, pending requests rejected. */
  close() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#generation += 1;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#detach(1000, 'client closed');
    this.#settleAll(new WsHubError('closed', 'the client was closed'));
    globalThis.removeEventListener?.('online', this.#onOnline);
    this.#report('closed', { code: 1000, reason: 'closed by client', final: true });
  }

  #start() {
    globalThis.addEventListener?.('online', this.#onOnline);
    this.#open();
  }

  /** One connection attempt. Never throws: failures become a close. */
  async #open() {
    this.#retryTimer = undefined;
    if (this.#stopped) return;
    const generation = ++this.#generation;
    this.#attempt += 1;
    this.#report('connecting');
    // The connect timeout covers fetching the token too.
    this.#lastMessageAt = Date.now();
    this.#armWatchdog(this.#config.connectTimeoutMs);
    let url;
    try {
      url = new URL(this.#url);
      const token = typeof this.#token === 'function' ? await this.#token() : this.#token;
      if (token != null && token !== '') url.searchParams.set('token', String(token));
    } catch (err) {
      if (generation === this.#generation) this.#lost(1006, `no token: ${err?.message ?? err}`);
      return;
    }
    if (generation !== this.#generation) return; // closed or timed out while the token was fetched
    if (this.#auto && this.#transport === 'websocket' && this.#unopened >= AUTO_FALLBACK_AFTER) {
      // WebSocket keeps failing: if the hub answers HTTP, something on the
      // way breaks upgrades, and a stream may pass where they do not.
      const answers = await this.#healthAnswers();
      if (generation !== this.#generation) return;
      if (answers) this.#transport = 'sse';
    }
    if (this.#transport === 'sse') {
      this.#openStream(generation, url.searchParams.get('token'));
      return;
    }
    let ws;
    try {
      ws = new WebSocket(url, 'wshub.json');
    } catch (err) {
      this.#lost(1006, String(err?.message ?? err));
      return;
    }
    this.#ws = ws;
    ws.onmessage = (e) => {
      if (ws === this.#ws) this.#receive(e.data);
    };
    ws.onclose = (e) => {
      if (ws === this.#ws) this.#lost(e.code, e.reason || (this.#state === 'open' ? '' : 'connection failed'));
    };
    ws.onerror = () => {}; // a close event always follows
  }

  /** Whether `GET /health` answers at all (any status), within the connect timeout. */
  async #healthAnswers() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#config.connectTimeoutMs);
    try {
      await fetch(this.#healthUrl, { cache: 'no-store', signal: abort.signal });
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One SSE attempt: `GET /sse?rooms=…&since=<cursor>` read as a stream of
   * fields (fetch rather than EventSource: it shows the refusal's status,
   * the heartbeat comments the watchdog needs, and lets every attempt take
   * a fresh token and the client's own cursor).
   */
  async #openStream(generation, token) {
    const url = new URL(this.#sseUrl);
    if (this.#rooms.size > 0) url.searchParams.set('rooms', [...this.#rooms].join(','));
    if (token != null) url.searchParams.set('token', token);
    const since = this.#cursor();
    if (since) url.searchParams.set('since', since);
    const abort = new AbortController();
    this.#stream = abort;
    this.#streamEpochChanged = false;
    this.#streamExpired = false;
    const current = () => generation === this.#generation && this.#stream === abort;
    let response;
    try {
      response = await fetch(url, { headers: { Accept: 'text/event-stream' }, cache: 'no-store', signal: abort.signal });
    } catch (err) {
      if (current()) this.#lost(1006, `connection failed: ${err?.message ?? err}`);
      return;
    }
    if (!current()) return;
    if (!response.ok || !response.body) {
      const body = await response.json().catch(() => ({}));
      if (current()) this.#lost(1006, `HTTP ${response.status} ${body?.error?.code ?? ''}`.trim());
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new StreamParser({
      onEvent: (data, id) => {
        if (current()) this.#receive(data, id);
      },
      onComment: () => {
        this.#lastMessageAt = Date.now();
      },
    });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !current()) break;
        parser.push(value);
      }
    } catch {
      // Cut or aborted: the end is handled below.
    }
    if (current()) {
      this.#lost(this.#streamExpired ? 4001 : 1006, this.#streamExpired ? 'token expired' : 'stream ended');
    }
  }

  /** `<epoch>;<room>=<seq>;…` for the rooms with a position, or null. */
  #cursor() {
    if (this.#epoch === null) return null;
    const parts = [...this.#rooms].filter((room) => this.#lastSeq.has(room)).map((room) => `${room}=${this.#lastSeq.get(room)}`);
    return parts.length > 0 ? [this.#epoch, ...parts].join(';') : null;
  }

  /** Reopens the stream for a changed room list (resuming every room it has a position in). */
  #reopenStream(changed) {
    if (changed && !this.#stopped && (this.#state === 'open' || this.#state === 'connecting')) {
      this.#generation += 1;
      this.#detach(1000, 'rooms changed');
      this.#open();
    }
    return Promise.resolve(null);
  }

  /** The current socket ended (or is given up on): report, then retry unless final. */
  #lost(code, reason) {
    const wasStable = this.#state === 'open' && Date.now() - this.#openedAt >= this.#config.stableMs;
    if (this.#transport === 'websocket') this.#unopened = this.#state === 'open' ? 0 : this.#unopened + 1;
    const attempt = this.#attempt;
    this.#generation += 1; // an attempt still fetching its token is abandoned
    this.#detach(4000, reason);
    this.#settleAll(new WsHubError('disconnected', `the connection closed (${code}) before the reply`));
    if (FINAL_CLOSE_CODES.has(code) && this.#transport === 'websocket') {
      this.#stopped = true;
      globalThis.removeEventListener?.('online', this.#onOnline);
      this.#report('closed', { code, reason, attempt, final: true });
      return;
    }
    if (wasStable) this.#attempt = 0;
    const cap = Math.min(this.#config.maxBackoffMs, this.#config.backoffMs * 2 ** Math.min(this.#attempt, 30));
    const retryInMs = Math.round(cap / 2 + (Math.random() * cap) / 2);
    this.#report('closed', { code, reason, attempt, final: false, retryInMs });
    if (!this.#stopped && this.#retryTimer === undefined) {
      this.#retryTimer = setTimeout(() => this.#open(), retryInMs);
    }
  }

  /** Forgets the current socket (its late events are ignored) and closes it. */
  #detach(code, reason) {
    clearTimeout(this.#watchdogTimer);
    this.#watchdogTimer = undefined;
    this.#state = 'closed';
    this.#stream?.abort();
    this.#stream = null;
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, String(reason).slice(0, 100));
    } catch {
      // Already closing; nothing more to do with it.
    }
  }

  /** Reconnects when nothing arrived for `ms` (the welcome, then any message). */
  #armWatchdog(ms) {
    clearTimeout(this.#watchdogTimer);
    if (!(ms > 0)) return;
    const check = () => {
      const idle = Date.now() - this.#lastMessageAt;
      if (idle >= ms) {
        this.#watchdogTimer = undefined;
        this.#lost(4000, this.#state === 'open' ? 'heartbeat timeout' : 'connect timeout');
      } else {
        this.#watchdogTimer = setTimeout(check, ms - idle);
      }
    };
    this.#watchdogTimer = setTimeout(check, ms);
  }

  #receive(data, id) {
    this.#lastMessageAt = Date.now();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // not ours to understand; the hub only sends JSON objects here
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'welcome') return this.#welcome(msg.payload ?? {}, id);
    if (msg.type === 'subscribed') this.#subscribed(msg.payload ?? {});
    if (msg.type === 'error' && msg.payload?.code === 'history_unavailable') {
      // On a WebSocket `subscribed` follows, whose `recovered` says the
      // same; a stream has no `subscribed`, so it is told here (unless the
      // hub restarted, which `epochChanged` says already).
      if (this.#transport === 'sse' && !this.#streamEpochChanged) {
        this.#notice({ historyUnavailable: [msg.payload.room] });
      }
      return;
    }
    if (msg.type === 'error' && msg.payload?.code === 'token_expired' && this.#transport === 'sse') {
      this.#streamExpired = true; // the stream ends next; that is the 4001
      return;
    }
    const pending = msg.ref != null ? this.#pending.get(msg.ref) : undefined;
    if (pending) return this.#settle(msg.ref, pending, msg);
    if (msg.type === 'error') {
      this.#notice({ error: hubError(msg) });
      return;
    }
    if (msg.id !== undefined) this.#event(msg);
  }

  #welcome(payload, id) {
    const epochChanged = this.#epoch !== null && payload.epoch !== this.#epoch;
    if (epochChanged) this.#lastSeq.clear(); // seqs restart with the new epoch
    if (this.#transport === 'sse') {
      this.#streamEpochChanged = epochChanged;
      // The welcome's cursor is where the stream starts in each room: what
      // it resumes from, or where a room stands that it joins afresh.
      for (const part of String(id ?? '').split(';').slice(1)) {
        const at = part.lastIndexOf('=');
        const room = part.slice(0, at);
        const seq = Number(part.slice(at + 1));
        if (at > 0 && this.#rooms.has(room) && Number.isSafeInteger(seq)) {
          this.#lastSeq.set(room, Math.max(this.#lastSeq.get(room) ?? 0, seq));
        }
      }
    }
    this.#epoch = payload.epoch ?? null;
    this.#connectionId = payload.connection_id ?? null;
    this.#heartbeatTimeoutMs = payload.heartbeat_timeout_ms ?? 0;
    this.#state = 'open';
    this.#openedAt = Date.now();
    this.#armWatchdog(this.#heartbeatTimeoutMs);
    if (this.#rooms.size > 0 && this.#transport === 'websocket') this.#rejoin();
    this.#report('open', { connectionId: this.#connectionId, epoch: this.#epoch, epochChanged });
  }

  /** Joins every wanted room, resuming from the last seq seen where there is one. */
  #rejoin() {
    const rooms = [...this.#rooms];
    const message = { type: 'subscribe', rooms };
    const since = {};
    for (const room of rooms) {
      if (this.#lastSeq.has(room)) since[room] = this.#lastSeq.get(room);
    }
    if (Object.keys(since).length > 0) Object.assign(message, { since, epoch: this.#epoch });
    this.#request(message, { keep: true }).then(
      (reply) => {
        const recovered = reply?.payload?.recovered ?? {};
        const lost = Object.keys(recovered).filter((room) => recovered[room] === false);
        if (lost.length > 0) this.#notice({ historyUnavailable: lost });
      },
      (err) => this.#notice({ error: err }),
    );
  }

  /** Takes each room's starting point from `positions`, unless its missed events follow. */
  #subscribed(payload) {
    if (payload.epoch) this.#epoch = payload.epoch;
    const recovered = payload.recovered ?? {};
    for (const [room, seq] of Object.entries(payload.positions ?? {})) {
      if (recovered[room] === true || !this.#rooms.has(room)) continue;
      this.#lastSeq.set(room, Math.max(this.#lastSeq.get(room) ?? 0, seq));
    }
  }

  #event(msg) {
    if (typeof msg.room === 'string' && typeof msg.seq === 'number') {
      const last = this.#lastSeq.get(msg.room);
      if (last !== undefined && msg.seq <= last) return; // seen before a reconnect
      if (last !== undefined || this.#rooms.has(msg.room)) this.#lastSeq.set(msg.room, msg.seq);
    }
    call(this.#onEvent, msg);
  }

  #request(message, { timeoutMs = this.#config.requestTimeoutMs, keep = false } = {}) {
    return new Promise((resolve, reject) => {
      if (this.#transport === 'sse' && !this.#stopped) {
        reject(
          new WsHubError(
            'unsupported_transport',
            `\`${message.type}\` needs a WebSocket; this client receives over SSE, which cannot send (publish with POST /api/events)`,
          ),
        );
        return;
      }
      const ws = this.#ws;
      if (this.#state !== 'open' || !ws) {
        reject(new WsHubError('not_connected', 'the hub is not connected'));
        return;
      }
      const ref = message.ref != null ? String(message.ref) : `wshub-${++this.#nextRef}`;
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new WsHubError('timeout', `no reply to \`${message.type}\` within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(ref, { message, resolve, reject, timer, keep });
      ws.send(JSON.stringify({ ...message, ref }));
    });
  }

  #settle(ref, pending, msg) {
    this.#pending.delete(ref);
    clearTimeout(pending.timer);
    if (msg.type === 'error') {
      pending.reject(hubError(msg));
      return;
    }
    const room = pending.message.room;
    if (msg.type === 'published' && this.#lastSeq.has(room)) {
      // Every earlier event of the room is already here, and our own is never
      // sent back: skip its seq so a resume does not replay it to us.
      this.#lastSeq.set(room, Math.max(this.#lastSeq.get(room), msg.payload.seq));
    }
    pending.resolve(msg);
  }

  /** Ends every pending request: `keep` ones (the rooms are kept) resolve null. */
  #settleAll(error) {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      if (p.keep) p.resolve(null);
      else p.reject(error);
    }
  }

  #forget(room) {
    this.#rooms.delete(room);
    this.#lastSeq.delete(room);
  }

  #report(state, fields = {}) {
    this.#state = state;
    call(this.#onStatus, { state, code: null, reason: '', attempt: this.#attempt, transport: this.#transport, ...fields });
  }

  /** Reports something that happened while open, without a change of state. */
  #notice(fields) {
    if (this.#state === 'open') this.#report('open', fields);
  }
}

function toWebSocketUrl(url) {
  const resolved = new URL(url, globalThis.location?.href);
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
  if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
  return resolved.href;
}

/** The hub's `/sse` and `/health` beside its WebSocket URL, over http(s). */
function siblingUrls(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.hash = '';
  const prefix = url.pathname.endsWith('/ws') ? url.pathname.slice(0, -2) : '/';
  const sse = new URL(url);
  sse.pathname = `${prefix}sse`;
  sse.searchParams.delete('rooms');
  const health = new URL(url);
  health.pathname = `${prefix}health`;
  health.search = '';
  return { sse: sse.href, health: health.href };
}

/**
 * The field parser of an event stream (the HTML standard's, for what the
 * hub sends): lines end in LF, CRLF or CR; a blank line dispatches the
 * block's `data` (lines joined by LF) with its `id`; `:` lines are comments.
 */
class StreamParser {
  #onEvent;
  #onComment;
  #rest = '';
  #data = null;
  #id = null;

  constructor({ onEvent, onComment }) {
    this.#onEvent = onEvent;
    this.#onComment = onComment;
  }

  push(text) {
    let buf = this.#rest + text;
    // A CR at the very end may be half a CRLF: it waits for the next piece.
    const held = buf.endsWith('\r') ? '\r' : '';
    if (held) buf = buf.slice(0, -1);
    const lines = buf.split(/\r\n|\r|\n/);
    // The last piece is unfinished.
    this.#rest = lines.pop() + held;
    for (const line of lines) this.#line(line);
  }

  #line(line) {
    if (line === '') {
      const data = this.#data;
      const id = this.#id;
      this.#data = null;
      this.#id = null;
      if (data !== null) this.#onEvent(data, id);
      return;
    }
    if (line.startsWith(':')) {
      this.#onComment(line.slice(1).trimStart());
      return;
    }
    const at = line.indexOf(':');
    const field = at < 0 ? line : line.slice(0, at);
    let value = at < 0 ? '' : line.slice(at + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data = this.#data === null ? value : `${this.#data}\n${value}`;
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
  }
}

function toList(rooms) {
  return Array.isArray(rooms) ? [...rooms] : [rooms];
}

function hubError(msg) {
  const { code = 'error', message = 'error', ...details } = msg.payload ?? {};
  return new WsHubError(code, message, { ...details, ref: msg.ref, correlation_id: msg.correlation_id });
}

/** Calls a user callback; its exceptions are reported, never thrown into the client. */
function call(fn, arg) {
  if (typeof fn !== 'function') return;
  try {
    fn(arg);
  } catch (err) {
    if (typeof reportError === 'function') reportError(err);
    else console.error(err);
  }
}
