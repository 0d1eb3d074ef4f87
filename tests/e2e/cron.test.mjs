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
  assert.deepEqual(res.json.repair, { examined: 1, repaired: 1, deferred: 0, more: false });
  assert.deepEqual(await getJson(h.new(), customerKey(record.customerId)), record);
});
