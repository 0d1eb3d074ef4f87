// The operator dashboard in a real browser (headless Chromium through puppeteer-core)
// against the compiled worker: it loads with no console error and no CSP violation,
// asks for a token with the API's own words, shows a seeded store's phase and gates,
// moves the phase, shows a refused move's reason, plans a rollback, and its backfill bar
// advances as cron runs fire. Screenshots of each state go to target/screenshots/.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import puppeteer from "puppeteer-core";
import { MESSY, generateLegacyData } from "../../scripts/legacy-data.mjs";
import { startWorker } from "./harness.mjs";

const SHOTS = fileURLToPath(new URL("../../target/screenshots/", import.meta.url));
const CANDIDATES = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
const CHROMIUM = CANDIDATES.find((path) => path && existsSync(path));
const MISSING =
  "no Chromium found (tried CHROMIUM_PATH, /usr/bin/chromium, /usr/bin/chromium-browser, /usr/bin/google-chrome): " +
  "run `bash scripts/setup.sh`, which installs Debian's chromium";
// In CI a missing browser fails the run; elsewhere the file is skipped with the reason.
if (!CHROMIUM && process.env.CI) throw new Error(MISSING);
const skip = CHROMIUM ? false : MISSING;

let h;
let browser;
let page;
const problems = [];

before(async () => {
  if (skip) return;
  h = await startWorker();
  await h.seedOld(generateLegacyData({ customers: 1_200, seed: 3 }));
  // Another service wrote one legacy customer into the new store, without updatedAt:
  // a conflict the backfill cannot order.
  const m = MESSY.noUpdatedAt;
  await h.new().put(m.key, JSON.stringify({ customerId: m.customerId, name: "Written by another service", email: m.email }));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root (CI) Chromium's sandbox cannot start; the page is our own.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    // Chromium logs every refused API call (the 401s, 403 and 409 these tests ask for);
    // the page shows those in words. Anything else — a file of its own failing to
    // load, a script error, a CSP report — is a problem.
    const refusal = /^Failed to load resource/.test(message.text()) && /\/admin\/migrate\//.test(message.location()?.url ?? "");
    if (!refusal) problems.push(`console: ${message.text()} (${message.location()?.url ?? ""})`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  await page.evaluateOnNewDocument(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      window.__violations = window.__violations || [];
      window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await h?.stop();
});

const shot = (name) => page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
const text = (selector) => page.$eval(selector, (node) => node.textContent);
const visible = (selector) => page.$eval(selector, (node) => !node.hidden && node.offsetParent !== null);

const unexpectedProblems = () => problems;

async function violations() {
  return page.evaluate(() => window.__violations || []);
}

const refreshCount = () => page.evaluate(() => Number(document.body.dataset.refreshes || 0));

/** Clicks "Refresh now" and waits for the status it fetched to be shown. */
async function refreshed() {
  const count = await refreshCount();
  await page.click("#refresh-now");
  await page.waitForFunction((n) => Number(document.body.dataset.refreshes || 0) > n, {}, count);
}

async function openDialog(button) {
  await page.click(button);
  await page.waitForSelector("#confirm[open]");
  return text("#confirm-body");
}

/** Confirms the dialog; resolves with the server's answer in words, once shown. */
async function confirm() {
  const count = await refreshCount();
  await page.click("#confirm-ok");
  await page.waitForFunction(() => !document.getElementById("confirm").open);
  await page.waitForFunction(() => document.getElementById("result").textContent.length > 0);
  // The page refreshes after every action.
  await page.waitForFunction((n) => Number(document.body.dataset.refreshes || 0) > n, {}, count);
  return text("#result p");
}

async function apiPhase() {
  return h.currentPhase();
}

async function fireCron() {
  const worker = await h.mf.getWorker();
  const result = await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
  assert.equal(result.outcome, "ok");
}

test("without a token the page asks for one with the API's words; a wrong one is refused", { skip }, async () => {
  const res = await page.goto(`${h.url}/admin/`, { waitUntil: "networkidle0" });
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-security-policy"], /script-src 'self'/);
  await page.waitForSelector("#sign-in:not([hidden])");
  assert.match(await text("#sign-in-message"), /missing_token/);
  assert.equal(await visible("#main"), false, "nothing is shown before sign-in");
  await shot("sign-in");

  await page.type("#token", "not-a-real-token");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /invalid_token/.test(document.getElementById("sign-in-message").textContent));
  assert.equal(await visible("#sign-in"), true);
  // A service token is a valid token, but not an admin's.
  await page.type("#token", h.serviceToken);
  await page.click("#token-form button[type=submit]");
  await page.waitForFunction(() => /forbidden/.test(document.getElementById("sign-in-message").textContent));
  const stored = await page.evaluate(() => ({ local: localStorage.length, url: location.href }));
  assert.equal(stored.local, 0, "nothing in localStorage");
  assert.ok(!stored.url.includes("token") && !stored.url.includes("?"), "no token in the URL");
});

test("signed in, it shows the seeded store's phase, routing and gates, with no console error or CSP violation", { skip }, async () => {
  await page.type("#token", h.adminToken);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#main:not([hidden])");
  await page.waitForSelector("#sign-in[hidden]", { hidden: true });
  assert.equal(await text("#phases li.current"), "0legacy");
  assert.equal(await page.$eval("#phases li.current", (n) => n.getAttribute("aria-current")), "step");
  assert.match(await text("#routing"), /Writes: old.*Reads: old/);
  const gates = await text("#gates");
  assert.match(gates, /Forward: to 1 dual_write allowed/);
  assert.match(await text("#refreshed"), /Refreshed at/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, "the token is kept in this tab");
  assert.deepEqual(unexpectedProblems(), []);
  assert.deepEqual(await violations(), []);
  await shot("phase-0");
});

test("a phase move made through the page changes the phase", { skip }, async () => {
  const body = await openDialog("#move-forward");
  assert.match(body, /Every gate of this move is met/);
  assert.match(await confirm(), /moved from phase 0 legacy to 1 dual_write/);
  assert.equal(await apiPhase(), 1);
  await page.waitForFunction(() => document.body.dataset.phase === "1");
  assert.equal(await text("#phases li.current"), "1dual_write");
  assert.match(await text("#audit tbody"), /e2e-admin/);
});

test("an open cohort shows on the strip and is cancelled from the page", { skip }, async () => {
  const opened = await h.request("POST", "/admin/migrate/cohort", { token: h.adminToken, body: { to: 2, percent: 12.5 } });
  assert.equal(opened.status, 200, opened.text);
  await refreshed();
  assert.equal(await text("#phases li.cohort"), "2read_new");
  assert.match(await text("#phase-meta"), /Cohort: 12\.5% of customers and 0 named customer\(s\) are in phase 2/);
  assert.ok(await visible("#cancel-cohort"));
  const body = await openDialog("#cancel-cohort");
  assert.match(body, /back to phase 1/);
  assert.match(await confirm(), /cohort cancelled: everyone in phase 1/);
  assert.equal(await page.$eval("#cancel-cohort", (n) => n.hidden), true);
  assert.equal(await apiPhase(), 1);
  assert.deepEqual(await violations(), []);
});

test("a refused move shows its reason; forcing needs a reason", { skip }, async () => {
  for (const to of [2, 3]) {
    const res = await h.request("POST", "/admin/migrate/phase", { token: h.adminToken, body: { phase: to } });
    assert.equal(res.status, 200, res.text);
  }
  // The page refreshes on its own: the moves made elsewhere show up without a click.
  await page.waitForFunction(() => document.body.dataset.phase === "3", { timeout: 12_000 });
  assert.equal(await text("#phases li.current"), "3backfill");
  // From here on, only the test refreshes, so each check sees the status it asked for.
  await page.click("#auto-refresh");
  assert.equal(await page.$eval("#auto-refresh", (n) => n.checked), false);
  assert.match(await text("#gates"), /Forward: to 4 new_primary refused/);
  const body = await openDialog("#move-forward");
  assert.match(body, /backfill_complete/);
  // Forcing without a reason is stopped in the dialog.
  await page.click("#force");
  await page.click("#confirm-ok");
  assert.match(await text("#confirm-error"), /needs a reason/);
  await page.click("#force");
  const answer = await confirm();
  assert.match(answer, /409 phase_change_refused/);
  assert.match(answer, /backfill_complete/);
  assert.equal(await apiPhase(), 3, "a refused move changes nothing");
  await shot("refused");
});

test("the backfill bar advances as cron runs fire", { skip }, async () => {
  const bar = () => page.$eval("#backfill-bar", (n) => n.value);
  const copied = async () => Number((await text('[data-count="copied"]')).replace(/,/g, ""));
  await refreshed();
  const seen = [await bar()];
  for (let run = 0; run < 8 && seen.at(-1) < 100; run += 1) {
    await fireCron();
    await refreshed();
    seen.push(await bar());
    if (run === 0) {
      await shot("backfill-running");
      // The README's picture (docs/dashboard.png is a copy): the first screenful.
      await page.screenshot({ path: `${SHOTS}dashboard.png`, clip: { x: 0, y: 0, width: 1280, height: 820 } });
    }
  }
  assert.ok(seen[1] > seen[0], `the bar moved after the first run: ${seen.join(" → ")}`);
  for (let i = 1; i < seen.length; i += 1) assert.ok(seen[i] >= seen[i - 1], `never backwards: ${seen.join(" → ")}`);
  assert.ok(seen.at(-1) >= 99.9, `the bar reached the end: ${seen.join(" → ")}`);
  assert.ok((await copied()) >= 2_000, "the copied count follows");
  assert.match(await text("#backfill-percent"), /%/);
  assert.match(await text("#backfill-summary"), /records\/s/);
  await shot("backfill-done");
});

test("a conflict shows both values; written through the API it shows as settled", { skip }, async () => {
  const m = MESSY.noUpdatedAt;
  const open = await text("#conflicts tbody");
  assert.match(open, new RegExp(`${m.key}versions cannot be ordered.*No Updated At.*Written by another service.*open`));
  const written = await h.request("PATCH", `/customer/${m.customerId}`, { token: h.serviceToken, body: { name: "Decided" } });
  assert.equal(written.status, 200, written.text);
  await refreshed();
  assert.match(await text("#conflicts tbody"), new RegExp(`${m.key}.*Decided.*Decided.*settled`));
  assert.deepEqual(unexpectedProblems(), []);
});

test("a conflict is settled from the page by a rule, after its dry run", { skip }, async () => {
  const key = "customer_dash_pair";
  const old = { customerId: "dash_pair", email: "dash-pair@example.com", name: "Old side" };
  await h.old().put(key, JSON.stringify(old));
  await h.new().put(key, JSON.stringify({ ...old, name: "New side" }));
  // What the backfill writes for a pair without updatedAt (docs/design.md §6).
  await h.new().put(`__migration/conflict/${key}`, JSON.stringify({ key, kind: "unordered", foundAt: Date.now() }));
  await refreshed();
  await page.select(`#conflicts select[data-key="${key}"]`, "keep_new");
  const planned = await openDialog(`#conflicts button[data-key="${key}"]`);
  assert.match(planned, /would hold CUSTOMER_KV's value/);
  assert.match(await confirm(), /now hold CUSTOMER_KV's value/);
  assert.equal(JSON.parse(await h.old().get(key)).name, "New side", "both stores hold the kept value");
  assert.doesNotMatch(await text("#conflicts tbody"), new RegExp(key), "its entry is gone");
  await shot("conflict-settled");
  assert.deepEqual(unexpectedProblems(), []);
});

test("pause, verification and the email audit run from the page and answer in words", { skip }, async () => {
  await openDialog("#backfill-pause");
  assert.match(await confirm(), /backfill paused/);
  assert.match(await text("#backfill-summary"), /^complete|^paused/);
  await openDialog("#backfill-resume");
  assert.match(await confirm(), /backfill (complete|running)/);

  await page.select("#verify-mode", "full");
  await openDialog("#verify");
  const verified = await confirm();
  assert.match(verified, /full, clean: listed \d/);
  assert.match(await text("#verification"), /Last full clean/);
  // A clean full verification after the backfill opens the gate to phase 4.
  assert.match(await text("#gates"), /Forward: to 4 new_primary allowed/);

  // The dry run comes first and is shown in the dialog; cancelling writes nothing.
  const found = await openDialog("#emails");
  assert.match(found, /dry run, nothing written/);
  assert.match(found, /records and \d[\d,]* mappings scanned/);
  await page.click("#confirm-cancel");
  await page.waitForFunction(() => !document.getElementById("confirm").open);
  assert.match(await text("#result p"), /dry run, nothing written/);
  await openDialog("#emails");
  assert.match(await confirm(), /^Done: repaired/);
  await shot("checks");
});

test("a rollback shows its planned steps first and changes nothing when cancelled", { skip }, async () => {
  await page.select("#rollback-to", "0");
  const plan = await openDialog("#rollback");
  assert.match(plan, /dry run, nothing changed/);
  assert.match(plan, /move to phase 2 read_new/);
  assert.match(plan, /move to phase 0 legacy/);
  await shot("rollback-plan");
  await page.click("#confirm-cancel");
  await page.waitForFunction(() => !document.getElementById("confirm").open);
  assert.equal(await apiPhase(), 3);
});

test("on a phone the page fits its width; still no console error or CSP violation", { skip }, async () => {
  await page.setViewport({ width: 390, height: 844, isMobile: true });
  await refreshed();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px too wide)`);
  await shot("phone");
  assert.deepEqual(unexpectedProblems(), []);
  assert.deepEqual(await violations(), []);
  // The watch is live and the policy enforced: an inline style is refused and reported.
  await page.evaluate(() => document.head.append(Object.assign(document.createElement("style"), { textContent: "body{}" })));
  await page.waitForFunction(() => (window.__violations || []).length > 0);
  assert.match((await violations())[0], /style-src/);
});
