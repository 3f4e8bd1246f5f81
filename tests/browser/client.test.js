// client.js in a real browser against the real hub: delivery, rooms,
// reconnects (hub restart, network cut, silent connection, expired token),
// final closes, typed errors, and the Origin check.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { FOREIGN_HOST, launchBrowser } from './lib/browser.js';
import { Hub, waitFor } from './lib/hub.js';
import { Proxy } from './lib/proxy.js';
import { clientTab } from './lib/tab.js';

/** Small reconnect delays so each reconnect takes well under a second. */
const FAST = { backoffMs: 200, maxBackoffMs: 1_000 };

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A hub for one test, stopped when the test ends. */
async function startHub(t, options) {
  const hub = await Hub.start(options);
  t.after(() => hub.stop());
  return hub;
}

/** A client tab for one test, closed when the test ends. */
async function openTab(t, hub, { wsUrl = hub.wsUrl, ...rest } = {}) {
  const tab = await clientTab(browser.context, { origin: hub.url, wsUrl, options: FAST, ...rest });
  t.after(() => tab.close());
  return tab;
}

async function assertNoProblems(...tabs) {
  for (const tab of tabs) assert.deepEqual(await tab.problems(), [], 'page errors or unhandled rejections');
}

function roomSeqs(events, room) {
  return events.filter((e) => e.room === room).map((e) => e.seq);
}

test('two tabs both receive an event published over HTTP', async (t) => {
  const hub = await startHub(t);
  const a = await openTab(t, hub);
  const b = await openTab(t, hub);
  await a.untilOpen();
  await b.untilOpen();
  const published = await hub.publish({ type: 'deploy_finished', payload: { build: 42 } });
  assert.equal(published.recipients, 2);
  for (const tab of [a, b]) {
    const event = await tab.untilEvent('deploy_finished');
    assert.equal(event.id, published.id);
    assert.equal(event.room, null);
    assert.deepEqual(event.payload, { build: 42 });
    assert.equal(event.correlation_id, published.correlation_id);
  }
  await assertNoProblems(a, b);
});

test('a tab that joins a room sees only that room’s events, and none after leaving', async (t) => {
  const hub = await startHub(t);
  const tab = await openTab(t, hub);
  await tab.untilOpen();
  const reply = await tab.run((t) => t.hub.subscribe(['alpha']));
  assert.deepEqual(reply.rooms, ['alpha']);
  assert.deepEqual(reply.positions, { alpha: 0 });

  // Each connection gets the hub's messages in the order it handled the
  // publishes, so once `alpha`'s event is here a `beta` one would be too.
  await hub.publish({ type: 'b1', room: 'beta', payload: {} });
  await hub.publish({ type: 'a1', room: 'alpha', payload: {} });
  await tab.untilEvent('a1');
  await tab.run((t) => t.hub.unsubscribe('alpha'));
  await hub.publish({ type: 'a2', room: 'alpha', payload: {} });
  await hub.publish({ type: 'everyone', payload: {} });
  await tab.untilEvent('everyone');

  const types = (await tab.events()).map((e) => e.type);
  assert.deepEqual(types, ['a1', 'everyone']);
  assert.deepEqual(await tab.run((t) => t.hub.rooms), []);
  await assertNoProblems(tab);
});

test('after a hub restart (new epoch) the tab rejoins its rooms and gets live events', async (t) => {
  const first = await Hub.start();
  t.after(() => first.stop());
  const tab = await openTab(t, first, { rooms: ['ops'] });
  await tab.untilOpen();
  await waitFor('the tab in room ops', async () => (await first.subscribers('ops')) === 1);
  await first.publish({ type: 'before', room: 'ops', payload: {} });
  await tab.untilEvent('before');

  const exit = await first.stop();
  assert.equal(exit.code, 0, 'the hub exits 0 on SIGTERM');
  const second = await startHub(t, { port: first.port });
  assert.notEqual(second.epoch, first.epoch);

  const reopened = await tab.until(
    (t, epoch) => t.statuses.find((s) => s.state === 'open' && s.epoch === epoch),
    second.epoch,
    20_000,
  );
  assert.equal(reopened.epochChanged, true);
  await waitFor('the tab back in room ops', async () => (await second.subscribers('ops')) === 1);
  // The new hub's seqs start again at 1, which the tab had already seen in
  // the old epoch: it must not drop this event as a duplicate.
  const published = await second.publish({ type: 'after', room: 'ops', payload: {} });
  assert.equal(published.seq, 1);
  const event = await tab.untilEvent('after');
  assert.equal(event.seq, 1);

  const statuses = await tab.statuses();
  const closed = statuses.find((s) => s.state === 'closed');
  assert.equal(closed.code, 1001, 'the hub said it was shutting down');
  assert.equal(closed.final, false);
  assert.deepEqual(
    (await tab.events()).map((e) => [e.type, e.seq]),
    [['before', 1], ['after', 1]],
  );
  await assertNoProblems(tab);
});

test('a cut connection resumes from history: missed events arrive once and in order', async (t) => {
  const hub = await startHub(t);
  const proxy = await Proxy.start(hub.port);
  t.after(() => proxy.close());
  const tab = await openTab(t, hub, { wsUrl: `ws://127.0.0.1:${proxy.port}/ws`, rooms: ['jobs', 'quiet'] });
  await tab.untilOpen();
  await waitFor('the tab in room jobs', async () => (await hub.subscribers('jobs')) === 1);
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 1 } });
  await tab.until((t) => t.events.length === 1);

  proxy.refusing = true;
  proxy.cut();
  await tab.until((t) => t.hub.state !== 'open');
  await waitFor('the hub to drop the cut connection', async () => (await hub.connections()).length === 0);
  const missed = [];
  for (const n of [2, 3]) {
    const reply = await hub.publish({ type: 'job', room: 'jobs', payload: { n } });
    assert.equal(reply.recipients, 0);
    missed.push(reply.seq);
  }
  assert.deepEqual(missed, [2, 3]);
  await waitFor('the tab to retry and be refused', () => proxy.refused >= 1);
  proxy.refusing = false;

  await tab.until((t) => t.events.length === 3, undefined, 15_000);
  await waitFor('the tab back in room jobs', async () => (await hub.subscribers('jobs')) === 1);
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 4 } });
  await tab.until((t) => t.events.length === 4);

  const events = await tab.events();
  assert.deepEqual(roomSeqs(events, 'jobs'), [1, 2, 3, 4]);
  assert.deepEqual(events.map((e) => e.payload.n), [1, 2, 3, 4]);
  assert.equal(new Set(events.map((e) => e.id)).size, 4);
  const opens = (await tab.statuses()).filter((s) => s.state === 'open' && s.connectionId);
  assert.equal(opens.length, 2);
  assert.equal(opens[1].epochChanged, false);
  assert.ok(!(await tab.statuses()).some((s) => s.historyUnavailable), 'nothing was lost');
  assert.deepEqual(await tab.run((t) => t.hub.positions), { jobs: 4, quiet: 0 });
  await assertNoProblems(tab);
});

test('a resume past the history window says which rooms lost events', async (t) => {
  const hub = await startHub(t, { args: ['--history-size', '2'] });
  const proxy = await Proxy.start(hub.port);
  t.after(() => proxy.close());
  const tab = await openTab(t, hub, { wsUrl: `ws://127.0.0.1:${proxy.port}/ws`, rooms: ['busy'] });
  await tab.untilOpen();
  await waitFor('the tab in room busy', async () => (await hub.subscribers('busy')) === 1);

  proxy.refusing = true;
  proxy.cut();
  await waitFor('the hub to drop the cut connection', async () => (await hub.connections()).length === 0);
  for (let n = 1; n <= 3; n += 1) await hub.publish({ type: 'tick', room: 'busy', payload: { n } });
  proxy.refusing = false;

  const notice = await tab.until((t) => t.statuses.find((s) => s.historyUnavailable), undefined, 15_000);
  assert.deepEqual(notice.historyUnavailable, ['busy']);
  assert.equal(notice.state, 'open');
  await hub.publish({ type: 'tick', room: 'busy', payload: { n: 4 } });
  await tab.untilEvent('tick');
  assert.deepEqual(roomSeqs(await tab.events(), 'busy'), [4]);
  await assertNoProblems(tab);
});

test('the watchdog reconnects a connection that went silent', async (t) => {
  const hub = await startHub(t);
  const proxy = await Proxy.start(hub.port);
  t.after(() => proxy.close());
  const tab = await openTab(t, hub, { wsUrl: `ws://127.0.0.1:${proxy.port}/ws`, rooms: ['r'] });
  await tab.untilOpen();
  const silent = await tab.run((t) => t.hub.connectionId);
  proxy.freeze(); // data stops flowing both ways; no socket closes
  // No reply can come now; the watchdog needs seconds, the request 300 ms.
  const timedOut = await tab.run((t) => t.hub.request({ type: 'ping' }, { timeoutMs: 300 }).catch((e) => e.code));
  assert.equal(timedOut, 'timeout');

  const closed = await tab.until((t) => t.statuses.find((s) => s.state === 'closed'), undefined, 15_000);
  assert.equal(closed.code, 4000);
  assert.equal(closed.reason, 'heartbeat timeout');
  await tab.untilOpen(2, 15_000);
  assert.notEqual(await tab.run((t) => t.hub.connectionId), silent);
  await waitFor('the new connection in room r', async () => (await hub.subscribers('r')) >= 1);
  await hub.publish({ type: 'alive', room: 'r', payload: {} });
  await tab.untilEvent('alive');
  await assertNoProblems(tab);
});

test('an expired token is replaced by a fresh one from the token function', async (t) => {
  const secret = 'browser-test-secret';
  const hub = await startHub(t, { args: ['--jwt-secret', secret] });
  let minted = 0;
  const tokenFrom = () => {
    minted += 1;
    return jwt(secret, { sub: 'alice', exp: Math.floor(Date.now() / 1000) + (minted === 1 ? 2 : 3600) });
  };
  const tab = await openTab(t, hub, { tokenFrom });
  await tab.untilOpen();
  const closed = await tab.until((t) => t.statuses.find((s) => s.state === 'closed'), undefined, 10_000);
  assert.equal(closed.code, 4001);
  await tab.untilOpen(2, 10_000);
  assert.equal(minted, 2, 'one fresh token per attempt');
  await assertNoProblems(tab);
});

test('reconnect delays back off exponentially, jittered and capped, while the hub is unreachable', async (t) => {
  const hub = await startHub(t);
  const proxy = await Proxy.start(hub.port);
  t.after(() => proxy.close());
  proxy.refusing = true;
  const tab = await openTab(t, hub, { wsUrl: `ws://127.0.0.1:${proxy.port}/ws` });
  const closes = await tab.until((t) => {
    const closed = t.statuses.filter((s) => s.state === 'closed');
    return closed.length >= 5 && closed;
  }, undefined, 20_000);
  closes.forEach((s, i) => {
    const cap = Math.min(FAST.maxBackoffMs, FAST.backoffMs * 2 ** (i + 1));
    assert.equal(s.attempt, i + 1);
    assert.equal(s.final, false);
    assert.ok(s.retryInMs >= cap / 2 && s.retryInMs <= cap, `attempt ${i + 1}: ${s.retryInMs} ms within [${cap / 2}, ${cap}]`);
  });
  proxy.refusing = false;
  await tab.untilOpen(1, 10_000);
  await assertNoProblems(tab);
});

test('close() while waiting to reconnect stops for good and leaves no timer', async (t) => {
  const hub = await startHub(t);
  const proxy = await Proxy.start(hub.port);
  t.after(() => proxy.close());
  const tab = await openTab(t, hub, { wsUrl: `ws://127.0.0.1:${proxy.port}/ws`, rooms: ['r'] });
  await tab.untilOpen();
  assert.ok((await tab.run((t) => t.timers.size)) >= 1, 'the watchdog runs while open');
  proxy.refusing = true;
  proxy.cut();
  const waiting = await tab.until((t) => t.statuses.find((s) => s.state === 'closed' && !s.final));
  assert.ok(waiting.retryInMs > 0);
  const after = await tab.run((t) => {
    const pending = t.timers.size;
    t.hub.close();
    return { pending, left: t.timers.size, state: t.hub.state, last: t.statuses.at(-1) };
  });
  assert.ok(after.pending >= 1, 'a retry was scheduled');
  assert.equal(after.left, 0, 'close() cleared every timer');
  assert.equal(after.state, 'closed');
  assert.deepEqual([after.last.state, after.last.final], ['closed', true]);
  // Calls after close() settle at once; subscribe keeps no room.
  const calls = await tab.run(async (t) => ({
    publish: await t.hub.publish('r', 'x').catch((e) => e.code),
    subscribe: await t.hub.subscribe(['s']),
    timers: t.timers.size,
  }));
  assert.deepEqual(calls, { publish: 'not_connected', subscribe: null, timers: 0 });
  await assertNoProblems(tab);
});

test('4003 (disconnected by admin) is final', async (t) => {
  const hub = await startHub(t);
  const tab = await openTab(t, hub);
  await tab.untilOpen();
  const id = await tab.run((t) => t.hub.connectionId);
  assert.equal((await hub.request('DELETE', `/api/connections/${id}`)).status, 204);
  const closed = await tab.until((t) => t.statuses.find((s) => s.state === 'closed'));
  assert.deepEqual([closed.code, closed.final, closed.retryInMs], [4003, true, undefined]);
  assert.equal(await tab.run((t) => t.hub.state), 'closed');
  // A later call fails cleanly instead of hanging.
  const err = await tab.run((t) => t.hub.publish('r', 'x').catch((e) => ({ name: e.name, code: e.code })));
  assert.deepEqual(err, { name: 'WsHubError', code: 'not_connected' });
  await assertNoProblems(tab);
});

test('requests resolve on their reply and reject with typed errors', async (t) => {
  const hub = await startHub(t);
  const a = await openTab(t, hub, { rooms: ['chat'] });
  const b = await openTab(t, hub, { rooms: ['chat'] });
  await a.untilOpen();
  await b.untilOpen();
  await waitFor('both tabs in room chat', async () => (await hub.subscribers('chat')) === 2);

  const published = await a.run((t) => t.hub.publish('chat', 'message', { text: 'hi' }));
  assert.equal(published.seq, 1);
  assert.equal(published.recipients, 1);
  const got = await b.untilEvent('message');
  assert.deepEqual([got.room, got.seq, got.payload.text], ['chat', 1, 'hi']);

  const members = await a.run((t) => t.hub.presence('chat'));
  assert.equal(members.length, 2);
  const pong = await a.run((t) => t.hub.request({ type: 'ping', ref: 'mine' }));
  assert.deepEqual([pong.type, pong.ref], ['pong', 'mine']);

  const failures = await a.run(async (t) => {
    const describe = (e) => ({
      isError: e instanceof t.WsHubError,
      code: e.code,
      fromHub: e.fromHub,
      room: e.details.room,
      hasMessage: e.message.length > 0,
    });
    return Promise.all([
      t.hub.publish('chat', 'welcome').catch(describe),
      t.hub.request({ type: 'frobnicate' }).catch(describe),
      t.hub.subscribe(['not a room!']).catch(describe),
    ]);
  });
  assert.deepEqual(
    failures.map((f) => [f.isError, f.code, f.fromHub, f.hasMessage]),
    [
      [true, 'reserved_type', true, true],
      [true, 'unknown_type', true, true],
      [true, 'invalid_message', true, true],
    ],
  );
  assert.deepEqual(await a.run((t) => t.hub.rooms), ['chat'], 'a refused room is not kept');

  // close() rejects what is pending, reports a final close, and stays closed.
  const closing = await a.run(async (t) => {
    const pending = t.hub.request({ type: 'ping' }).catch((e) => e.code);
    t.hub.close();
    return { pending: await pending, state: t.hub.state, last: t.statuses.at(-1) };
  });
  assert.equal(closing.pending, 'closed');
  assert.equal(closing.state, 'closed');
  assert.deepEqual([closing.last.state, closing.last.final], ['closed', true]);
  await waitFor('the hub to see one connection left', async () => (await hub.connections()).length === 1);
  await assertNoProblems(a, b);
});

test('a page from a foreign origin is refused by the default Origin check', async (t) => {
  const hub = await startHub(t);
  const page = `<!doctype html><title>foreign</title><script>
    window.result = new Promise((resolve) => {
      const ws = new WebSocket(${JSON.stringify(hub.wsUrl)});
      ws.onopen = () => resolve('open');
      ws.onclose = (e) => resolve('closed ' + e.code);
      setTimeout(() => resolve('no answer'), 10000);
    });
  </script>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });

  const before = await hub.metric('wshub_handshake_rejections_total{code="origin_not_allowed"}');
  const tab = await browser.context.newPage();
  t.after(() => tab.close().catch(() => {}));
  await tab.goto(`http://${FOREIGN_HOST}:${server.address().port}/`);
  assert.equal(await tab.evaluate(() => location.hostname), FOREIGN_HOST);
  assert.equal(await tab.evaluate(() => window.result), 'closed 1006');
  const afterCount = await hub.metric('wshub_handshake_rejections_total{code="origin_not_allowed"}');
  assert.equal(afterCount, before + 1);
  assert.equal((await hub.connections()).length, 0);
});

/** An HS256 JWT, as the hub verifies them. */
function jwt(secret, claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

test('rpc asks the app behind the hub and gets its result or its refusal', async (t) => {
  // The app: a tiny HTTP server on a loopback port, answering rpc_hook.
  const app = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const call = JSON.parse(body);
      res.setHeader('Content-Type', 'application/json');
      if (call.method === 'sum') {
        res.end(JSON.stringify({ result: call.params.reduce((a, b) => a + b, 0) }));
      } else {
        res.statusCode = 403;
        res.end(JSON.stringify({ error: { code: 'no_such_method', message: `no ${call.method}` } }));
      }
    });
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.after(() => app.close());
  const hub = await startHub(t, { args: ['--rpc-hook', `http://127.0.0.1:${app.address().port}/rpc`] });
  const tab = await openTab(t, hub);
  await tab.untilOpen();
  const sum = await tab.run((t) => t.hub.rpc('sum', [1, 2, 3]));
  assert.equal(sum, 6);
  const refused = await tab.run((t) => t.hub.rpc('nope').catch((e) => ({ name: e.name, code: e.code, message: e.message })));
  assert.equal(refused.name, 'WsHubError');
  assert.equal(refused.code, 'no_such_method');
  await assertNoProblems(tab);
});
