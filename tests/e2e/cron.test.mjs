// The cron trigger in workerd: each run drains the repair journal.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { customerKey, getJson, sampleRecord, startWorker } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
  await h.reset();
});
after(async () => {
  await h?.stop();
});

async function fireCron() {
  const worker = await h.mf.getWorker();
  return worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
}

test("a cron run copies a journaled key to the store that missed its write and empties the journal", async () => {
  await h.setPhase(2);
  const record = sampleRecord("cron_repair_1", "cron.repair@e2e.example.com");
  // The new store took the write, the old one missed it and the key was journaled.
  await h.new().put(customerKey(record.customerId), JSON.stringify(record), { metadata: { source: "api" } });
  const entry = { lagging: "old", at: Date.now() };
  await h.new().put(`__migration/journal/${customerKey(record.customerId)}`, JSON.stringify(entry), { metadata: entry });

  const status = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
  assert.equal(status.json.repairJournal.count, 1);
  assert.equal(status.json.gates.back.met, false, "reads may not move back while a key is out of sync");

  const result = await fireCron();
  assert.equal(result.outcome, "ok");
  assert.deepEqual(await getJson(h.old(), customerKey(record.customerId)), record);
  const copied = await h.old().getWithMetadata(customerKey(record.customerId));
  assert.deepEqual(copied.metadata, { source: "api" }, "metadata travels with the value");
  const { keys } = await h.new().list({ prefix: "__migration/journal/" });
  assert.equal(keys.length, 0, "journal drained");
});

test("POST /admin/migrate/repair drains the journal on demand and reports it", async () => {
  await h.setPhase(1);
  const record = sampleRecord("cron_repair_2", "cron.repair2@e2e.example.com");
  await h.old().put(customerKey(record.customerId), JSON.stringify(record));
  const entry = { lagging: "new", at: Date.now() };
  await h.new().put(`__migration/journal/${customerKey(record.customerId)}`, JSON.stringify(entry), { metadata: entry });
  const res = await h.request("POST", "/admin/migrate/repair", { token: h.adminToken });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json.repair, { examined: 1, repaired: 1, deferred: 0, more: false, settling: 0 });
  assert.deepEqual(await getJson(h.new(), customerKey(record.customerId)), record);
});

test("with a KV consistency window, a repair that wrote stays journaled until a later check agrees", async () => {
  // Production KV may serve a stale read for up to the window, so the copy a repair made
  // may rest on one: the entry stays until a check after the window finds the stores agree.
  const w = await startWorker({ bindings: { KV_CONSISTENCY_WINDOW_SECONDS: "1" } });
  try {
    await w.reset();
    await w.setPhase(1);
    const record = sampleRecord("cron_repair_3", "cron.repair3@e2e.example.com");
    const key = customerKey(record.customerId);
    await w.old().put(key, JSON.stringify(record));
    const entry = { lagging: "new", at: Date.now() };
    await w.new().put(`__migration/journal/${key}`, JSON.stringify(entry), { metadata: entry });

    const first = await w.request("POST", "/admin/migrate/repair", { token: w.adminToken });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.repair.repaired, 0);
    assert.equal(first.json.repair.settling, 1);
    assert.ok(first.json.repair.waitMs > 0 && first.json.repair.waitMs <= 1000, first.text);
    assert.deepEqual(await getJson(w.new(), key), record, "the copy is made at once");
    const early = await w.request("POST", "/admin/migrate/repair", { token: w.adminToken });
    assert.equal(early.json.repair.settling, 1, "not checked before the window has passed");

    await new Promise((resolve) => setTimeout(resolve, 1100));
    const later = await w.request("POST", "/admin/migrate/repair", { token: w.adminToken });
    assert.deepEqual(
      { repaired: later.json.repair.repaired, settling: later.json.repair.settling },
      { repaired: 1, settling: 0 },
      later.text,
    );
    const { keys } = await w.new().list({ prefix: "__migration/journal/" });
    assert.equal(keys.length, 0, "journal drained");
  } finally {
    await w.stop();
  }
});
