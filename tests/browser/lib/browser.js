// Launching Debian's Chromium through playwright-core, headless, with a
// fresh profile that is removed afterwards.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The host name the foreign-origin test serves its page under. */
export const FOREIGN_HOST = 'foreign.test';

const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--host-resolver-rules=MAP ${FOREIGN_HOST} 127.0.0.1`,
];

/**
 * A browser with its own fresh profile directory.
 * `context.newPage()` opens a tab; `close()` ends the browser and removes the profile.
 */
export async function launchBrowser() {
  const profile = await fs.mkdtemp(path.join(os.tmpdir(), 'wshub-chromium-'));
  let context;
  try {
    // Playwright passes `--user-data-dir=<profile>` for a persistent context.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      timeout: 30_000,
      viewport: { width: 1280, height: 800 },
    });
  } catch (err) {
    await fs.rm(profile, { recursive: true, force: true });
    throw err;
  }
  context.setDefaultTimeout(10_000);
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      await fs.rm(profile, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}

/**
 * Opens a tab on a real document of `origin` (the hub's `/health`), so
 * scripts in it can `import('/client.js')` from the hub. The document must
 * really come from a loopback server: Chromium's Local Network Access
 * checks refuse loopback WebSockets from a page with no address space
 * (such as one a test fulfils itself).
 */
export async function blankTab(context, origin) {
  const page = await context.newPage();
  // Uncaught exceptions only: the console also logs every failed WebSocket
  // attempt, which the reconnect tests cause on purpose.
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  await page.goto(`${origin}/health`);
  page.errors = errors;
  return page;
}
