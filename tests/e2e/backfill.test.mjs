// The backfill in workerd: 10,000 legacy keys (with the messy cases) migrate through
// cron runs while a client keeps creating, updating and deleting customers; afterwards
// the new store mirrors the old one, and every acknowledged write reads back.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { generateLegacyData, mulberry32 } from "../../scripts/legacy-data.mjs";
import { customerKey, getJson, isTombstone, liveClient, startWorker } from "./harness.mjs";

const LEGACY_CUSTOMERS = 4_995; // with their mappings and the messy cases: about 10,000 keys
let h;
let entries;

before(async () => {
  h = await startWorker();
  await h.reset();
  entries = generateLegacyData({ customers: LEGACY_CUSTOMERS, seed: 7 });
  await h.seedOld(entries);
});
after(async () => {
  await h?.stop();
});

async function fireCron() {
  const worker = await h.mf.getWorker();
  const result = await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
  assert.equal(result.outcome, "ok");
}

async function status() {
  const res = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

test("10,000 legacy keys migrate under live traffic and every acknowledged write holds", async () => {
  await h.setPhase(1);
  await h.setPhase(2);
  await h.setPhase(3);
  const stop = { done: false };
  const client = liveClient(h, { stop, random: mulberry32(42), legacyCustomers: LEGACY_CUSTOMERS });
  let runs = 0;
  for (; runs < 40; runs += 1) {
    await fireCron();
    if ((await status()).backfill.complete) break;
  }
  stop.done = true;
  const told = await client;
  const progress = (await status()).backfill;
  assert.equal(progress.complete, true, JSON.stringify(progress));
  console.log(
    `backfill: ${runs + 1} cron runs, ${progress.counts.scanned} scanned, ${progress.counts.copied} copied, ` +
      `${progress.counts.corrupt} corrupt, ${progress.counts.expired} expired, ${progress.counts.conflicts} conflicts; ` +
      `client: ${told.size} customers written`,
  );
  assert.ok(told.size >= 20, "the client made writes during the backfill");
  // Every corrupt value is named by key (docs/design.md §6), the messy case among them.
  assert.ok(progress.counts.corrupt >= 1, JSON.stringify(progress.counts));
  assert.equal(progress.counts.corruptKeys.length, progress.counts.corrupt);
  assert.ok(progress.counts.corruptKeys.includes("customer_legacy_corrupt_json"), progress.counts.corruptKeys.join());
  assert.ok(progress.counts.copied >= 9_000);

  // The new store mirrors the old one: values, metadata and expirations.
  const oldKeys = new Map((await h.listAll(h.old())).map((k) => [k.name, k]));
  const newKeys = new Map((await h.listAll(h.new())).map((k) => [k.name, k]));
  let compared = 0;
  for (const [name, oldKey] of oldKeys) {
    if (!name.startsWith("customer_") && !name.startsWith("email_to_customer_")) continue;
    const newKey = newKeys.get(name);
    assert.ok(newKey, `${name} missing in the new store`);
    assert.equal(await h.new().get(name), await h.old().get(name), `${name} value`);
    assert.deepEqual(newKey.metadata, oldKey.metadata, `${name} metadata`);
    assert.equal(newKey.expiration, oldKey.expiration, `${name} expiration`);
    compared += 1;
  }
  assert.ok(compared >= 9_000, `compared ${compared}`);

  // The worker's own verification agrees, and opens the gate to phase 4.
  let report;
  for (let requests = 0; requests < 20; requests += 1) {
    const res = await h.request("POST", "/admin/migrate/verify", { token: h.adminToken, body: { mode: "full" } });
    assert.equal(res.status, 200, res.text);
    report = res.json;
    if (report.complete) break;
  }
  console.log(`verification: ${JSON.stringify(report)}`);
  assert.equal(report.complete, true);
  assert.equal(report.missing.count, 0, JSON.stringify(report.missing));
  assert.equal(report.mismatched.count, 0, JSON.stringify(report.mismatched));
  assert.equal(report.extra.count, 0, JSON.stringify(report.extra));
  const moved = await h.request("POST", "/admin/migrate/phase", { token: h.adminToken, body: { phase: 4 } });
  assert.equal(moved.status, 200, `gate 3->4: ${moved.text}`);
  assert.equal(moved.json.forced, false);

  // Every write the client saw acknowledged is what reads return; deletes stay deleted.
  for (const [id, expected] of told) {
    const res = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
    if (expected === "deleted") {
      assert.equal(res.status, 404, `${id} came back`);
      assert.ok(isTombstone(await getJson(h.new(), customerKey(id))), `${id} tombstone`);
    } else {
      assert.equal(res.status, 200, `${id}: ${res.text}`);
      assert.equal(res.json.name, expected.name, `${id}`);
      assert.equal((await getJson(h.new(), customerKey(id))).name, expected.name, `${id} in the new store`);
    }
  }
});
