// The live page at `/`: state, rooms, log and filters, health, the publish
// form; and a screenshot of it for CI (target/browser/live-page.png).

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { launchBrowser } from './lib/browser.js';
import { Hub, REPO, waitFor } from './lib/hub.js';
import { clientTab } from './lib/tab.js';

const SHOTS = path.join(REPO, 'target', 'browser');

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function startHub(t) {
  const hub = await Hub.start();
  t.after(() => hub.stop());
  return hub;
}

/** Opens the live page; `page.errors` collects uncaught exceptions. */
async function openLivePage(t, hub, query = '') {
  const page = await browser.context.newPage();
  t.after(() => page.close().catch(() => {}));
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  await page.goto(`${hub.url}/${query}`);
  await page.waitForSelector('#state[data-state="open"]');
  return page;
}

/** The visible log rows, newest first, as `{type, room, seq, payload}`. */
function visibleEvents(page) {
  return page.$$eval('#entries tr.event:not([hidden])', (rows) =>
    rows.map((row) => {
      const cells = [...row.cells].map((c) => c.textContent);
      return { type: row.dataset.type, room: row.dataset.room, seq: cells[2], payload: cells[4] };
    }),
  );
}

test('the live page shows state, events, health, filters, and its publish form reaches another client', async (t) => {
  const hub = await startHub(t);
  const page = await openLivePage(t, hub);
  assert.equal(await page.textContent('#state'), 'open');
  await page.waitForFunction(() => document.querySelector('#connections').textContent === '1');
  assert.equal(await page.textContent('#health'), 'ok');

  // Join a room with the form.
  await page.fill('#join-room', 'builds');
  await page.click('#join button[type="submit"]');
  await waitFor('the page in room builds', async () => (await hub.subscribers('builds')) === 1);
  await page.waitForSelector('#rooms li[data-room="builds"]');
  assert.match(page.url(), /[?&]rooms=builds\b/);

  // Events published over HTTP: to the room, and to everyone.
  await hub.publish({ type: 'build_started', room: 'builds', payload: { build: 118, branch: 'main' } });
  await hub.publish({ type: 'announcement', payload: { text: 'deploy window opens at 14:00' } });
  await hub.publish({ type: 'ignored', room: 'elsewhere', payload: {} });
  await page.waitForSelector('#entries tr.event[data-type="announcement"]');
  assert.deepEqual(
    (await visibleEvents(page)).map((e) => [e.type, e.room, e.seq]),
    [['announcement', '', ''], ['build_started', 'builds', '1']],
  );

  // Health: a component changes, the hub broadcasts `health_status`.
  const put = await hub.request('PUT', '/api/health/database', { status: 'degraded', detail: 'replica lag 4 s' });
  assert.equal(put.status, 200);
  await page.waitForSelector('#entries tr.event[data-type="health_status"]');
  await page.waitForSelector('#health[data-state="degraded"]');
  assert.match(await page.textContent('#components li[data-component="database"]'), /degraded: replica lag 4 s/);

  // A second client in the room receives what the page's form publishes.
  const other = await clientTab(browser.context, { origin: hub.url, wsUrl: hub.wsUrl, rooms: ['builds'] });
  t.after(() => other.close());
  await other.untilOpen();
  await waitFor('two clients in room builds', async () => (await hub.subscribers('builds')) === 2);
  await page.fill('#pub-room', 'builds');
  await page.fill('#pub-type', 'deploy_requested');
  await page.fill('#pub-payload', '{"env": "staging", "by": "live page"}');
  await page.click('#publish button[type="submit"]');
  await page.waitForSelector('#publish-result.ok');
  assert.match(await page.textContent('#publish-result'), /builds #2 to 1 other subscriber\b/);
  const delivered = await other.untilEvent('deploy_requested');
  assert.deepEqual([delivered.room, delivered.seq, delivered.payload], ['builds', 2, { env: 'staging', by: 'live page' }]);

  // A bad payload is refused in the page, nothing is sent.
  await page.fill('#pub-payload', '[1, 2]');
  await page.click('#publish button[type="submit"]');
  await page.waitForSelector('#publish-result.error');
  assert.equal(await page.textContent('#publish-result'), 'the payload must be a JSON object');

  // The same form over HTTP, to everyone: the page itself gets this one.
  await page.check('input[name="via"][value="http"]');
  await page.fill('#pub-room', '');
  await page.fill('#pub-type', 'http_note');
  await page.fill('#pub-payload', '{"note": "sent with POST /api/events"}');
  await page.click('#publish button[type="submit"]');
  await page.waitForSelector('#publish-result.ok');
  await page.waitForSelector('#entries tr.event[data-type="http_note"]');
  await other.untilEvent('http_note');

  // Filters: by room, by type, by text, then back to everything.
  await page.selectOption('#f-room', 'builds');
  assert.deepEqual((await visibleEvents(page)).map((e) => e.type), ['build_started']);
  await page.selectOption('#f-room', '-');
  assert.deepEqual((await visibleEvents(page)).map((e) => e.type), ['http_note', 'health_status', 'announcement']);
  await page.selectOption('#f-room', '');
  await page.fill('#f-type', 'health');
  assert.deepEqual((await visibleEvents(page)).map((e) => e.type), ['health_status']);
  await page.fill('#f-type', '');
  await page.fill('#f-text', 'window opens');
  assert.deepEqual((await visibleEvents(page)).map((e) => e.type), ['announcement']);
  await page.fill('#f-text', '');
  assert.equal((await visibleEvents(page)).length, 4);

  // Expanding a row shows the whole message.
  await page.click('#entries tr.event[data-type="build_started"]');
  assert.match(await page.textContent('#entries tr.detail'), /"seq": 1/);

  // The page polls /health every 5 s for the count.
  await page.waitForFunction(() => document.querySelector('#connections').textContent === '2', null, { timeout: 15_000 });
  await fs.mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, 'live-page.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(SHOTS, 'live-page-dark.png') });
  assert.deepEqual(page.errors, []);
});

test('the live page joins the rooms in its URL and leaves one on request', async (t) => {
  const hub = await startHub(t);
  const page = await openLivePage(t, hub, '?rooms=alpha,beta');
  await waitFor('the page in alpha and beta', async () =>
    (await hub.subscribers('alpha')) === 1 && (await hub.subscribers('beta')) === 1);
  await page.click('#rooms li[data-room="alpha"] button');
  await waitFor('the page out of alpha', async () => (await hub.subscribers('alpha')) === 0);
  assert.match(page.url(), /[?&]rooms=beta$/);
  await hub.publish({ type: 'in_alpha', room: 'alpha', payload: {} });
  await hub.publish({ type: 'in_beta', room: 'beta', payload: {} });
  await page.waitForSelector('#entries tr.event[data-type="in_beta"]');
  assert.deepEqual((await visibleEvents(page)).map((e) => e.type), ['in_beta']);
  assert.deepEqual(page.errors, []);
});

test('the live page shows a lost connection and recovers', async (t) => {
  const hub = await startHub(t);
  const page = await openLivePage(t, hub);
  const id = await page.evaluate(() => window.wshub.connectionId);
  const port = hub.port;
  await hub.stop();
  await page.waitForSelector('#state[data-state="closed"]');
  const second = await Hub.start({ port });
  t.after(() => second.stop());
  await page.waitForFunction((old) => window.wshub.state === 'open' && window.wshub.connectionId !== old, id, {
    timeout: 20_000,
  });
  await page.waitForSelector('#state[data-state="open"]');
  assert.match(await page.textContent('#entries'), /the hub restarted \(new epoch\)/);
  await second.publish({ type: 'after_restart', payload: {} });
  await page.waitForSelector('#entries tr.event[data-type="after_restart"]');
  assert.deepEqual(page.errors, []);
});
