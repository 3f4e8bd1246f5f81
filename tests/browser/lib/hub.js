// Starting and stopping real wshub processes for the browser tests.
//
// Every hub runs with `--stdin-events` on a pipe: if this test process dies
// however it dies, the pipe closes and the hub shuts down by itself.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const HUB_BIN = path.resolve(REPO, process.env.WSHUB_BIN ?? 'target/release/wshub');

/** Short liveness settings so watchdogs and restarts resolve in seconds. */
const TEST_FLAGS = [
  '--heartbeat-interval', '500ms',
  '--heartbeat-timeout', '3s',
  '--shutdown-grace', '1s',
];

const running = new Set();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const hub of running) hub.child.kill('SIGKILL');
    process.exit(130);
  });
}
process.once('exit', () => {
  for (const hub of running) hub.child.kill('SIGKILL');
});

/** A running hub process. */
export class Hub {
  /**
   * Starts a hub and waits for its `listening` line.
   * @param {{port?: number, args?: string[], timeoutMs?: number}} [options]
   *   `port` reuses a port a previous hub had (retried while still taken).
   */
  static async start({ port = 0, args = [], timeoutMs = 10_000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await startOnce(port, args, deadline);
      } catch (err) {
        if (!(port !== 0 && /in use|AddrInUse/i.test(err.message)) || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  }

  constructor(child, listening, stderr) {
    this.child = child;
    this.addr = listening.addr;
    this.epoch = listening.epoch;
    this.port = Number(listening.addr.split(':').pop());
    this.url = `http://${listening.addr}`;
    this.wsUrl = `ws://${listening.addr}/ws`;
    this.stderr = stderr;
    this.exited = once(child, 'exit').then(([code, signal]) => ({ code, signal }));
    running.add(this);
    this.exited.then(() => running.delete(this));
  }

  /** A JSON request to the hub; resolves `{status, body}` (body parsed when JSON). */
  async request(method, route, body) {
    const res = await fetch(this.url + route, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    });
    const text = await res.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON (metrics); keep the text
    }
    return { status: res.status, body: parsed };
  }

  /** `POST /api/events`; throws unless 202. */
  async publish(event) {
    const { status, body } = await this.request('POST', '/api/events', event);
    if (status !== 202) throw new Error(`publish answered ${status}: ${JSON.stringify(body)}`);
    return body;
  }

  /** The open connections, from the admin API. */
  async connections() {
    return (await this.request('GET', '/api/connections')).body.connections;
  }

  /** How many connections a room has (0 when the hub does not know it). */
  async subscribers(room) {
    const { status, body } = await this.request('GET', `/api/rooms/${encodeURIComponent(room)}`);
    return status === 200 ? body.members.length : 0;
  }

  /** One counter or gauge of `/metrics`, by its full series name; 0 when absent. */
  async metric(series) {
    const { body } = await this.request('GET', '/metrics');
    for (const line of String(body).split('\n')) {
      const at = line.lastIndexOf(' ');
      if (line.slice(0, at) === series) return Number(line.slice(at + 1));
    }
    return 0;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5_000) {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

async function startOnce(port, args, deadline) {
  const child = spawn(
    HUB_BIN,
    ['--stdin-events', '--bind', `127.0.0.1:${port}`, ...TEST_FLAGS, ...args],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, WSHUB_LOG: process.env.WSHUB_LOG ?? 'info' } },
  );
  const stderr = [];
  readline.createInterface({ input: child.stderr }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 500) stderr.shift();
    if (process.env.WSHUB_TEST_VERBOSE) console.error(`[hub ${port}] ${line}`);
  });
  const lines = readline.createInterface({ input: child.stdout });
  const first = new Promise((resolve, reject) => {
    lines.once('line', resolve);
    child.once('error', reject);
    child.once('close', (code) => reject(new Error(`the hub exited with ${code}: ${stderr.slice(-5).join('\n')}`)));
  });
  let line;
  try {
    line = await withTimeout(first, deadline - Date.now(), 'the hub did not print its listening line');
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const listening = JSON.parse(line);
  if (listening.event !== 'listening') {
    child.kill('SIGKILL');
    throw new Error(`unexpected first line: ${line}`);
  }
  return new Hub(child, listening, stderr);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with `message` if `promise` has not settled within `ms`. */
export async function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} (after ${ms} ms)`)), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `check` until it returns a truthy value (returned), or throws after
 * `timeoutMs` with `what` and the last value seen.
 */
export async function waitFor(what, check, { timeoutMs = 10_000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${describe(last)}`);
    }
    await sleep(intervalMs);
  }
}

function describe(value) {
  if (value instanceof Error) return value.message;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
