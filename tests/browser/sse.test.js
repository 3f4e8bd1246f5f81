// Server-Sent Events in a real browser against the real hub (PROTOCOL.md
// section 12): a bare EventSource, no library, cut off through a proxy and
// resuming by itself with Last-Event-ID; client.js in `sse` mode; and
// client.js in `auto` mode falling back to SSE behind a proxy that breaks
// WebSocket upgrades.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { blankTab, launchBrowser } from './lib/browser.js';
import { Hub, waitFor } from './lib/hub.js';
import { Proxy } from './lib/proxy.js';
import { clientTab } from './lib/tab.js';

const FAST = { backoffMs: 200, maxBackoffMs: 1_000 };

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function startHub(t, options) {
  const hub = await Hub.start(options);
  t.after(() => hub.stop());
  return hub;
}

async function startProxy(t, hub) {
  const proxy = await Proxy.start(hub.port);
  t.after(() => proxy.close());
  return proxy;
}

function seqs(events, room) {
  return events.filter((e) => e.room === room).map((e) => e.seq);
}

test('a bare EventSource receives, is cut off, and resumes with nothing missed or doubled', async (t) => {
  const hub = await startHub(t);
  const proxy = await startProxy(t, hub);
  const page = await blankTab(browser.context, hub.url);
  t.after(() => page.close().catch(() => {}));
  // Another port than the page's: the stream is a cross-origin request,
  // which the hub's CORS headers let the page read.
  await page.evaluate((url) => {
    window.got = { messages: [], ids: [], opens: 0, errors: 0 };
    const source = new EventSource(url);
    source.onopen = () => {
      window.got.opens += 1;
    };
    source.onerror = () => {
      window.got.errors += 1;
    };
    source.onmessage = (e) => {
      window.got.messages.push(JSON.parse(e.data));
      window.got.ids.push(e.lastEventId);
    };
    window.source = source;
  }, `http://127.0.0.1:${proxy.port}/sse?rooms=jobs`);
  const got = () => page.evaluate(() => window.got);
  const events = async () => (await got()).messages.filter((m) => m.type === 'job');

  await waitFor('the stream in room jobs', async () => (await hub.subscribers('jobs')) === 1);
  const welcome = (await got()).messages[0];
  assert.equal(welcome.type, 'welcome');
  assert.equal(welcome.payload.protocol, 'sse');
  assert.equal((await got()).ids[0], `${hub.epoch};jobs=0`);
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 1 } });
  await waitFor('event 1', async () => (await events()).length === 1);

  proxy.refusing = true;
  proxy.cut();
  await waitFor('the hub to drop the cut stream', async () => (await hub.connections()).length === 0);
  for (const n of [2, 3]) {
    const reply = await hub.publish({ type: 'job', room: 'jobs', payload: { n } });
    assert.equal(reply.recipients, 0);
  }
  await waitFor('the EventSource to see the cut', async () => (await got()).errors >= 1);
  proxy.refusing = false;

  // `retry: 1000`: the EventSource reconnects with the last id it saw.
  await waitFor('the missed events', async () => (await events()).length === 3, { timeoutMs: 15_000 });
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 4 } });
  await waitFor('event 4', async () => (await events()).length === 4);
  const jobs = await events();
  assert.deepEqual(jobs.map((e) => e.seq), [1, 2, 3, 4]);
  assert.deepEqual(jobs.map((e) => e.payload.n), [1, 2, 3, 4]);
  const { ids, opens, messages } = await got();
  assert.equal(opens, 2);
  assert.equal(messages.filter((m) => m.type === 'welcome').length, 2);
  assert.equal(ids.at(-1), `${hub.epoch};jobs=4`);
  await page.evaluate(() => window.source.close());
});

test('client.js in sse mode receives, resumes after a cut, and cannot send', async (t) => {
  const hub = await startHub(t);
  const proxy = await startProxy(t, hub);
  const tab = await clientTab(browser.context, {
    origin: hub.url,
    wsUrl: `ws://127.0.0.1:${proxy.port}/ws`,
    rooms: ['jobs', 'quiet'],
    options: { ...FAST, transport: 'sse' },
  });
  t.after(() => tab.close());
  await tab.untilOpen();
  const info = (await hub.connections())[0];
  assert.equal(info.protocol, 'sse');
  assert.deepEqual(info.rooms, ['jobs', 'quiet']);
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 1 } });
  await hub.publish({ type: 'to_all', payload: {} });
  await tab.untilEvent('to_all');

  proxy.refusing = true;
  proxy.cut();
  await tab.until((t) => t.hub.state !== 'open');
  await waitFor('the hub to drop the cut stream', async () => (await hub.connections()).length === 0);
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 2 } });
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 3 } });
  proxy.refusing = false;
  await tab.untilOpen(2, 15_000);
  await tab.until((t) => t.events.filter((e) => e.type === 'job').length === 3);
  await hub.publish({ type: 'job', room: 'jobs', payload: { n: 4 } });
  await tab.until((t) => t.events.filter((e) => e.type === 'job').length === 4);
  const events = await tab.events();
  assert.deepEqual(seqs(events, 'jobs'), [1, 2, 3, 4]);
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'nothing doubled');
  assert.deepEqual(await tab.run((t) => t.hub.positions), { jobs: 4, quiet: 0 });
  const statuses = await tab.statuses();
  assert.ok(statuses.every((s) => s.transport === 'sse'));
  assert.ok(!statuses.some((s) => s.historyUnavailable), 'nothing was lost');

  // What a stream cannot do is refused with a clear code, not sent.
  const refused = await tab.run(async (t) => {
    const code = (p) => p.then(() => 'resolved', (e) => [e.name, e.code, e.fromHub, e.message.includes('SSE')]);
    return {
      publish: await code(t.hub.publish('jobs', 'x', {})),
      presence: await code(t.hub.presence('jobs')),
      request: await code(t.hub.request({ type: 'ping' })),
    };
  });
  for (const r of Object.values(refused)) assert.deepEqual(r, ['WsHubError', 'unsupported_transport', false, true]);

  // subscribe reopens the stream with the new room, resuming the others.
  await tab.run((t) => t.hub.subscribe('later'));
  await waitFor('the stream in room later', async () => (await hub.subscribers('later')) === 1);
  await hub.publish({ type: 'late', room: 'later', payload: {} });
  await tab.untilEvent('late');
  assert.deepEqual(seqs(await tab.events(), 'jobs'), [1, 2, 3, 4], 'no replay of jobs');
  assert.deepEqual((await tab.problems()), []);
});

test('auto falls back to SSE when WebSocket upgrades fail and /health answers', async (t) => {
  const hub = await startHub(t);
  const proxy = await startProxy(t, hub);
  proxy.breakUpgrades = true;
  const tab = await clientTab(browser.context, {
    origin: hub.url,
    wsUrl: `ws://127.0.0.1:${proxy.port}/ws`,
    rooms: ['r'],
    options: { ...FAST, transport: 'auto' },
  });
  t.after(() => tab.close());
  await tab.untilOpen(1, 15_000);
  assert.equal(await tab.run((t) => t.hub.transport), 'sse');
  assert.equal(proxy.brokenUpgrades, 2, 'two WebSocket attempts first');
  const statuses = await tab.statuses();
  const closes = statuses.filter((s) => s.state === 'closed');
  assert.deepEqual(closes.map((s) => s.transport), ['websocket', 'websocket']);
  assert.equal(statuses.find((s) => s.state === 'open').transport, 'sse');
  await hub.publish({ type: 'via_sse', room: 'r', payload: {} });
  const event = await tab.untilEvent('via_sse');
  assert.equal(event.seq, 1);
  assert.deepEqual((await tab.problems()), []);
});
