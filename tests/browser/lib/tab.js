// A browser tab running client.js and recording what it reports.

import { blankTab } from './browser.js';

/**
 * Opens a tab on `origin`, imports `/client.js` from it and connects to
 * `wsUrl`. Inside the page, `window.t` holds the client (`t.hub`), every
 * event (`t.events`), every status (`t.statuses`) and any unhandled
 * promise rejection (`t.unhandled`); `t.timers` holds client.js's pending timers.
 */
export async function clientTab(context, { origin, wsUrl, rooms, options = {}, tokenFrom }) {
  const page = await blankTab(context, origin);
  if (tokenFrom) await page.exposeFunction('nextToken', tokenFrom);
  await page.evaluate(
    async ({ wsUrl, rooms, options, withToken }) => {
      // Count the timers client.js has pending, to check that close() clears them.
      const timers = new Set();
      const { setTimeout: set, clearTimeout: clear } = window;
      window.setTimeout = (fn, ms, ...args) => {
        if (!new Error().stack.includes('/client.js')) return set(fn, ms, ...args);
        const id = set(() => {
          timers.delete(id);
          fn(...args);
        }, ms);
        timers.add(id);
        return id;
      };
      window.clearTimeout = (id) => {
        timers.delete(id);
        clear(id);
      };
      const { WsHub, WsHubError } = await import('/client.js');
      const t = { events: [], statuses: [], unhandled: [], WsHubError, timers };
      window.t = t;
      addEventListener('unhandledrejection', (e) => t.unhandled.push(String(e.reason?.stack ?? e.reason)));
      t.hub = WsHub.connect(wsUrl, {
        ...options,
        rooms,
        token: withToken ? () => window.nextToken() : undefined,
        onEvent: (event) => t.events.push(event),
        onStatus: (status) =>
          t.statuses.push({
            ...status,
            at: Date.now(),
            error: status.error && { code: status.error.code, message: status.error.message },
          }),
      });
    },
    { wsUrl, rooms, options, withToken: Boolean(tokenFrom) },
  );
  return new ClientTab(page);
}

export class ClientTab {
  constructor(page) {
    this.page = page;
  }

  events() {
    return this.page.evaluate(() => window.t.events);
  }

  statuses() {
    return this.page.evaluate(() => window.t.statuses);
  }

  /** Errors the page reported and promise rejections nobody handled. */
  async problems() {
    const unhandled = await this.page.evaluate(() => window.t.unhandled);
    return [...unhandled, ...this.page.errors.map((e) => e.message)];
  }

  /** Runs `fn(t, arg)` in the page, with `t` as above. */
  run(fn, arg) {
    return this.page.evaluate(
      ({ source, arg }) => (0, eval)(`(${source})`)(window.t, arg),
      { source: fn.toString(), arg },
    );
  }

  /** Waits until `fn(t, arg)` is truthy in the page, and returns it. */
  async until(fn, arg, timeout = 10_000) {
    const handle = await this.page.waitForFunction(
      ({ source, arg }) => (0, eval)(`(${source})`)(window.t, arg),
      { source: fn.toString(), arg },
      { timeout, polling: 50 },
    );
    return handle.jsonValue();
  }

  /** Waits for the client's state to be `open` (after `n` opens in all). */
  untilOpen(n = 1, timeout = 10_000) {
    return this.until((t, n) => t.hub.state === 'open' && t.statuses.filter((s) => s.state === 'open' && s.connectionId).length >= n, n, timeout);
  }

  /** Waits for an event of `type` and returns it. */
  untilEvent(type, timeout = 10_000) {
    return this.until((t, type) => t.events.find((e) => e.type === type), type, timeout);
  }

  close() {
    return this.page.close().catch(() => {});
  }
}
