// A small browser driver for the UI tests: pytest starts it (tests/ui/_browser.py), sends one JSON
// command per line on stdin and reads one JSON answer per line on stdout.
//
//   node driver.mjs USER_DATA_DIR        -> {"ready": true, "userAgent": "..."}
//   {"id": 1, "op": "click", "selector": "..."}  -> {"id": 1, "ok": true, "value": ...}
//                                                   {"id": 1, "ok": false, "error": "..."}
//
// It drives Debian's chromium (never a browser that playwright downloads) headless, without
// its sandbox (we run as root), with the background services off: this machine has no network
// beyond loopback, and Chromium's own connections would only fail. Ends when stdin closes.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.UI_TEST_CHROMIUM || '/usr/bin/chromium';
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const context = await chromium.launchPersistentContext(process.argv[2], {
  executablePath: CHROMIUM,
  headless: true,
  chromiumSandbox: false,
  args: FLAGS,
  viewport: { width: 1280, height: 900 },
});
const messages = [];  // the pages' console errors and uncaught exceptions, for failure reports
let page = context.pages()[0] ?? (await context.newPage());

// A fresh page per notebook: closing the old one skips its "leave the page?" prompt.
async function open({ url, timeout }) {
  const old = page;
  page = await context.newPage();
  await old.close();
  messages.length = 0;
  page.on('console', (msg) => { if (msg.type() === 'error') messages.push(`console: ${msg.text()}`); });
  page.on('pageerror', (err) => messages.push(`pageerror: ${err.message}`));
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout });
  return page.url();
}

// The first of several outcomes to become visible, by index, so a test can stop at a wrong one
// (an error text instead of a widget) instead of waiting for the right one to time out.
// Each outcome is a playwright selector and, optionally, a pattern its text must match.
async function firstOf({ outcomes, timeout }) {
  const locators = outcomes.map(({ selector, pattern }) => (pattern
    ? page.locator(selector).filter({ hasText: new RegExp(pattern) }) : page.locator(selector)).first());
  for (const deadline = Date.now() + timeout; Date.now() < deadline; await page.waitForTimeout(100)) {
    for (const [index, locator] of locators.entries()) if (await locator.isVisible()) return index;
  }
  throw new Error(`none of ${JSON.stringify(outcomes)} appeared within ${timeout} ms`);
}

const first = (selector) => page.locator(selector).first();

// Each operation takes the command's fields and returns a JSON-able value.
const ops = {
  open,
  first_of: firstOf,
  wait: ({ selector, state = 'visible', timeout }) => first(selector).waitFor({ state, timeout }),
  click: ({ selector, timeout }) => first(selector).click({ timeout }),
  focus: ({ selector, timeout }) => first(selector).focus({ timeout }),
  // Keys go to whatever has focus: a test focuses an element first, as a user would by clicking.
  press: ({ key }) => page.keyboard.press(key),
  texts: ({ selector }) => page.locator(selector).allInnerTexts(),
  count: ({ selector }) => page.locator(selector).count(),
  attribute: ({ selector, name, timeout }) => first(selector).getAttribute(name, { timeout }),
  screenshot: ({ path, selector }) =>
    (selector ? first(selector) : page).screenshot({ path }).then(() => path),
  console: () => messages.splice(0),
};

const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
reply({ ready: true, userAgent: await page.evaluate(() => navigator.userAgent) });

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  try {
    if (!(op in ops)) throw new Error(`unknown operation ${JSON.stringify(op)}`);
    reply({ id, ok: true, value: (await ops[op](args)) ?? null });
  } catch (err) {
    reply({ id, ok: false, error: String(err.message || err).split('\n').slice(0, 8).join('\n') });
  }
}
await context.close();
