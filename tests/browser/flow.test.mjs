// End-to-end browser test of the baedal web front end against a running API.
//   BAEDAL_URL=http://127.0.0.1:8080 node --test tests/browser/flow.test.mjs
// Needs: npm install (playwright-core) in this folder and a Chromium at CHROMIUM_PATH or /usr/bin/chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = (process.env.BAEDAL_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHOTS = path.join(REPO, 'target', 'screenshots');
const WAIT = 30_000; // every wait for an observable result has this deadline
const PHONE = { width: 375, height: 812 };
const DESKTOP = { width: 1280, height: 900 };

let browser;
const contexts = [];
const pageErrors = [];

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
});
after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
});

const tid = (id) => `[data-testid="${id}"]`;
// Every screenshot first checks the page fits its width: nothing may stick out
// sideways (at 375 px, a phone).
async function shot(page, name) {
  const over = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(over <= 0, `${name}: the page is ${over}px wider than its ${page.viewportSize().width}px viewport`);
  // Nor out of its card: every element ends inside the card that holds it.
  const outside = await page.evaluate(() => [...document.querySelectorAll('.card')].flatMap((card) => {
    const edge = card.getBoundingClientRect().right;
    return [...card.querySelectorAll('*')]
      .filter((el) => el.getClientRects().length && el.getBoundingClientRect().right > edge + 0.5)
      .map((el) => `${el.tagName.toLowerCase()}.${el.className || ''} "${el.textContent.slice(0, 40)}"`);
  }));
  assert.deepEqual(outside, [], `${name}: sticks out of its card`);
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

async function login(username, viewport = PHONE, options = {}) {
  // Seoul's clock, as the product's users read it (notification texts are in KST).
  const ctx = await browser.newContext({ viewport, timezoneId: 'Asia/Seoul', ...options });
  contexts.push(ctx);
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${username}: ${e.message}`));
  // What the page's calls answered, for the failure report: a wait that times out says why.
  page.trail = [];
  page.on('response', (r) => {
    if (r.url().includes('/api/')) page.trail.push(`${new Date().toISOString()} ${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  page.on('requestfailed', (r) => page.trail.push(`${new Date().toISOString()} FAILED ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(BASE + '/');
  await page.locator(tid('login-hint')).waitFor({ timeout: WAIT });
  await page.fill(tid('login-username'), username);
  await page.fill(tid('login-password'), 'demo');
  await page.click(tid('login-submit'));
  await page.locator(tid('logout')).waitFor({ state: 'visible', timeout: WAIT });
  return page;
}

async function apiJson(p) {
  const res = await fetch(BASE + '/api' + p);
  assert.equal(res.status, 200, `GET /api${p}`);
  return res.json();
}

// Customer: open the first shop, put two different menu items in the cart (first one twice), check the total.
async function fillCartFromFirstShop(page) {
  const firstShop = page.locator(`${tid('shop-list')} a[data-testid^="shop-"]`).first();
  await firstShop.waitFor({ timeout: WAIT });
  const shopId = (await firstShop.getAttribute('data-testid')).slice('shop-'.length);
  await firstShop.click();
  const menu = await apiJson(`/shops/${shopId}/menu`);
  assert.ok(menu.length >= 2, 'first shop has at least two menu items');
  const [a, b] = menu;
  await page.locator(tid(`menu-add-${a.id}`)).click({ timeout: WAIT });
  await page.locator(tid(`menu-add-${b.id}`)).click();
  await page.locator(tid(`cart-inc-${a.id}`)).click();
  assert.equal(await page.locator(tid(`cart-qty-${a.id}`)).textContent(), '2');
  const total = a.price * 2 + b.price;
  assert.equal(await page.locator(tid('cart-total')).textContent(), `${total.toLocaleString('en-US')}원`);
  return { shopId, total };
}

async function placeOrder(page) {
  await page.selectOption(tid('payment-token'), 'tok_ok');
  await page.click(tid('place-order'));
  await page.waitForURL(/#\/order\/[^/]+$/, { timeout: WAIT });
  const orderId = decodeURIComponent(new URL(page.url()).hash.split('/').pop());
  await page.locator(`${tid('order-status')}[data-status="PAID"]`).waitFor({ timeout: WAIT });
  // Marker that a reload would wipe: proves every later status arrived without reloading.
  await page.evaluate(() => { window.__neverReloaded = true; });
  return orderId;
}

async function statusIs(page, testid, status) {
  try {
    await page.locator(`${tid(testid)}[data-status="${status}"]`).waitFor({ timeout: WAIT });
  } catch (e) {
    await shot(page, `failed-${testid}-${status}.png`).catch(() => {});
    throw new Error(`${e.message}\nthe page's last API answers:\n${page.trail.slice(-25).join('\n')}`);
  }
}

test('order, accept, ready, rider delivers; customer page follows live to DELIVERED', { timeout: 240_000 }, async () => {
  const riderNames = ['rider1', 'rider2', 'rider3', 'rider4', 'rider5', 'rider6'];
  const [customer, owner, ...riders] = await Promise.all([
    login('customer1'), login('owner1', DESKTOP), ...riderNames.map((r) => login(r)),
  ]);

  const { total } = await fillCartFromFirstShop(customer);
  const orderId = await placeOrder(customer);
  assert.equal(await customer.locator(tid('order-total')).textContent().then((s) => s.includes(total.toLocaleString('en-US'))), true);
  assert.equal(await customer.locator(tid('cancel-order')).isVisible(), true, 'cancel offered while PAID');
  await shot(customer, 'customer-order.png');

  // Owner (already on the page) sees the paid order appear without reloading, accepts with 5 minutes, marks it ready.
  await statusIs(owner, `owner-order-${orderId}`, 'PAID');
  await owner.fill(tid(`cook-minutes-${orderId}`), '5');
  await owner.click(tid(`accept-${orderId}`));
  await owner.locator(tid(`ready-${orderId}`)).waitFor({ timeout: WAIT });
  await owner.locator(tid(`owner-ready-at-${orderId}`)).waitFor({ timeout: WAIT });
  await statusIs(customer, 'order-status', 'ACCEPTED');
  assert.equal(await customer.locator(tid('cancel-order')).count(), 0, 'no cancel after acceptance');
  await owner.click(tid(`ready-${orderId}`));
  // The owner is told of each change too (the feed refreshes without a reload).
  await owner.locator(`${tid('notifications')} [data-status="ACCEPTED"][data-order="${orderId}"]`).first().waitFor({ timeout: WAIT });
  await shot(owner, 'owner.png');

  // Whichever rider is nearest gets the offer; an unanswered offer may move on, so keep looking until one is ours.
  let rider = null;
  const deadline = Date.now() + WAIT;
  while (!rider && Date.now() < deadline) {
    for (const page of riders) {
      const offer = await page.locator(tid(`rider-offer-${orderId}`)).allTextContents(); // no waiting: just look
      if (!offer.length) continue;
      assert.match(offer[0], /\d+(\.\d)? k?m/, 'offer shows the distance');
      await page.click(tid(`offer-accept-${orderId}`)).catch(() => {}); // the card may vanish if the offer just expired
      const got = await page.locator(tid(`delivery-${orderId}`)).waitFor({ timeout: 5_000 }).then(() => true, () => false);
      if (got) { rider = page; break; }
    }
    if (!rider) await riders[0].waitForTimeout(250);
  }
  assert.ok(rider, 'some rider was offered the order and accepted it');

  await rider.locator(tid(`pickup-${orderId}`)).click({ timeout: WAIT });
  await statusIs(customer, 'order-status', 'PICKED_UP');
  // Each role's page draws the order's map: shop, delivery address and, while
  // the rider carries it, the rider, with the distances.
  for (const page of [customer, rider]) {
    await page.locator(`${tid(`map-${orderId}`)}[data-rider="shown"]`).waitFor({ timeout: WAIT });
    const roles = await page.locator(`${tid(`map-${orderId}`)} [data-role]`).evaluateAll((els) => els.map((e) => e.dataset.role));
    assert.deepEqual(roles.sort(), ['customer', 'rider', 'shop']);
    assert.match(await page.locator(`${tid(`map-${orderId}`)} .map-distances`).textContent(), /\d+(\.\d)? k?m/);
  }
  await owner.locator(`${tid(`owner-map-${orderId}`)} summary`).click();
  await owner.locator(`${tid(`map-${orderId}`)}[data-rider="shown"]`).waitFor({ timeout: WAIT });
  await shot(customer, 'customer-map.png');
  await rider.locator(tid(`complete-${orderId}`)).waitFor({ timeout: WAIT });
  await shot(rider, 'rider.png');
  await rider.click(tid(`complete-${orderId}`));
  await statusIs(rider, `delivery-${orderId}`, 'DELIVERED');

  await statusIs(customer, 'order-status', 'DELIVERED');
  await statusIs(owner, `owner-order-${orderId}`, 'DELIVERED');
  assert.equal(await customer.evaluate(() => window.__neverReloaded), true, 'customer page was never reloaded');
  assert.match(await customer.locator(tid('step-DELIVERED')).getAttribute('class'), /current/);
  const seen = await customer.locator(`${tid('order-history')} [data-status]`).evaluateAll((els) => els.map((e) => e.dataset.status));
  for (const s of ['PAID', 'ACCEPTED', 'DELIVERY_STARTED', 'PICKED_UP', 'DELIVERED']) assert.ok(seen.includes(s), `history has ${s}: ${seen}`);
  const delivered = customer.locator(`${tid('notifications')} [data-status="DELIVERED"][data-order="${orderId}"]`).first();
  await delivered.waitFor({ timeout: WAIT });
  // The order number on the page is the one the notification (written by the server) names.
  const no = await customer.locator(tid(`order-no-${orderId}`)).first().textContent();
  assert.match(no, /^[0-9A-HJKMNP-TV-Z]{3}-[0-9A-HJKMNP-TV-Z]{3}$/);
  assert.ok((await delivered.textContent()).includes(no), `notification names ${no}`);
  await shot(customer, 'customer-delivered.png');
  // Every role's page at phone width.
  await owner.setViewportSize(PHONE);
  await shot(owner, 'owner-phone.png');
  await shot(rider, 'rider-delivered.png');
  assert.deepEqual(pageErrors, []);
});

test('declined payment is shown; a paid order cancelled while PAID shows CANCELLED and a refund', { timeout: 120_000 }, async () => {
  const customer = await login('customer2');
  const { total } = await fillCartFromFirstShop(customer);

  await customer.selectOption(tid('payment-token'), 'tok_declined');
  await customer.click(tid('place-order'));
  await customer.locator(`${tid('message')}[data-kind="error"]`).waitFor({ timeout: WAIT });
  assert.match(await customer.locator(tid('message')).textContent(), /결제가 거절|declined/i);
  assert.doesNotMatch(customer.url(), /#\/order\//, 'a declined payment does not create an order');

  const orderId = await placeOrder(customer);
  await customer.click(tid('cancel-order'));
  await statusIs(customer, 'order-status', 'CANCELLED');
  const refund = customer.locator(tid('order-refund'));
  await refund.waitFor({ timeout: WAIT });
  assert.ok((await refund.textContent()).includes(total.toLocaleString('en-US')), 'refund of the full total');
  assert.equal(await customer.locator(tid('cancel-order')).count(), 0);
  assert.equal(await customer.evaluate(() => window.__neverReloaded), true);
  // The customer's order list shows it too, and reopening the order shows the same outcome.
  await customer.click(tid('back-to-shops'));
  await statusIs(customer, `my-order-${orderId}`, 'CANCELLED');
  await customer.click(tid(`my-order-${orderId}`));
  await statusIs(customer, 'order-status', 'CANCELLED');
  await customer.locator(tid('order-refund')).waitFor({ timeout: WAIT });
  await shot(customer, 'customer-cancelled.png');
  assert.deepEqual(pageErrors, []);
});

test("a rider's page takes the position from the browser and reports it", { timeout: 60_000 }, async () => {
  // Chromium's own geolocation, set to a position and allowed for the page.
  const rider = await login('rider6', PHONE, {
    geolocation: { latitude: 37.5101, longitude: 127.0402 }, permissions: ['geolocation'],
  });
  await rider.click(tid('rider-use-position'));
  await rider.locator(`${tid('message')}[data-kind="info"]`).waitFor({ timeout: WAIT });
  assert.equal(await rider.inputValue(tid('rider-lat')), '37.510100');
  assert.equal(await rider.inputValue(tid('rider-lon')), '127.040200');
  assert.ok(rider.trail.some((l) => / 204 PUT \/api\/rider\/location$/.test(l)), rider.trail.join('\n'));
  await shot(rider, 'rider-geolocation.png');
  assert.deepEqual(pageErrors, []);
});
