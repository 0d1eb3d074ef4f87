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

test("with a KV consistency window, a journaled key is repaired after the window and forgotten after another", async () => {
  // Production KV may serve a stale read for up to the window: a repair waits until the
  // failed request's writes are visible everywhere, and its own copy stays journaled
  // until a check after the window finds the stores agreeing.
  const w = await startWorker({ bindings: { KV_CONSISTENCY_WINDOW_SECONDS: "1" } });
  const pause = () => new Promise((resolve) => setTimeout(resolve, 1100));
  const repair = async () => {
    const res = await w.request("POST", "/admin/migrate/repair", { token: w.adminToken });
    assert.equal(res.status, 200, res.text);
    return res.json.repair;
  };
  try {
    await w.reset();
    await w.setPhase(1);
    const record = sampleRecord("cron_repair_3", "cron.repair3@e2e.example.com");
    const key = customerKey(record.customerId);
    await w.old().put(key, JSON.stringify(record));
    const entry = { lagging: "new", at: Date.now() };
    await w.new().put(`__migration/journal/${key}`, JSON.stringify(entry), { metadata: entry });

    const early = await repair();
    assert.deepEqual({ repaired: early.repaired, settling: early.settling }, { repaired: 0, settling: 1 });
    assert.ok(early.waitMs > 0 && early.waitMs <= 1000, JSON.stringify(early));
    assert.equal(await w.new().get(key), null, "not repaired within the window of the failed write");

    await pause();
    const copied = await repair();
    assert.deepEqual({ repaired: copied.repaired, settling: copied.settling }, { repaired: 0, settling: 1 });
    assert.deepEqual(await getJson(w.new(), key), record, "the copy is made once the window has passed");

    await pause();
    const checked = await repair();
    assert.deepEqual({ repaired: checked.repaired, settling: checked.settling }, { repaired: 1, settling: 0 });
    const { keys } = await w.new().list({ prefix: "__migration/journal/" });
    assert.equal(keys.length, 0, "journal drained");
  } finally {
    await w.stop();
  }
});

test("with a KV consistency window, a read-repair copy is checked after the window and corrected if it was stale", async () => {
  // A read at another KV location may see the old store before a client's write reached
  // it; the copy it makes is checked once the window has passed, with reads that see
  // that write.
  const w = await startWorker({ bindings: { KV_CONSISTENCY_WINDOW_SECONDS: "1" } });
  const pause = () => new Promise((resolve) => setTimeout(resolve, 1100));
  const settle = async () => {
    const res = await w.request("POST", "/admin/migrate/repair", { token: w.adminToken });
    assert.equal(res.status, 200, res.text);
    return res.json.settle;
  };
  const entries = async () => (await w.new().list({ prefix: "__migration/settle/" })).keys;
  try {
    await w.reset();
    await w.setPhase(2);
    const record = sampleRecord("cron_settle_1", "cron.settle1@e2e.example.com");
    const key = customerKey(record.customerId);
    await w.old().put(key, JSON.stringify(record));

    const read = await w.request("GET", `/customer/${record.customerId}`, { token: w.serviceToken });
    assert.equal(read.status, 200, read.text);
    assert.deepEqual(await getJson(w.new(), key), record, "the fallback read copied the key");
    const [entry] = await entries();
    assert.ok(entry?.name.startsWith(`__migration/settle/${key}/`), JSON.stringify(entry));
    const status = await w.request("GET", "/admin/migrate/status", { token: w.adminToken });
    assert.equal(status.json.readRepairsSettling.count, 1);

    // The old store changed behind the copy, as a write the copy's reads did not see.
    const newer = { ...record, name: "Newer Name", updatedAt: new Date().toISOString() };
    await w.old().put(key, JSON.stringify(newer));
    const early = await settle();
    assert.deepEqual({ waiting: early.waiting, corrected: early.corrected }, { waiting: 1, corrected: 0 });

    await pause();
    const corrected = await settle();
    assert.equal(corrected.corrected, 1, JSON.stringify(corrected));
    assert.deepEqual(await getJson(w.new(), key), newer, "the stale copy is corrected");

    await pause();
    const settled = await settle();
    assert.equal(settled.settled, 1, JSON.stringify(settled));
    assert.equal((await entries()).length, 0, "no copy awaits its check");
  } finally {
    await w.stop();
  }
});
