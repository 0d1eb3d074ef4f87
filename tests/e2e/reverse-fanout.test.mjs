// A rollback's reverse sync fanned out on Miniflare's queues (docs/design.md §13): the
// writes made in phase 4 reach only CUSTOMER_KV; rolling back to phase 1 waits until
// queue consumers have copied them back to OTP_AUTH_KV, and the status shows the chunks.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { generateLegacyData } from "../../scripts/legacy-data.mjs";
import { sampleRecord, seedCustomer, startWorker } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker({ queue: true });
});
after(async () => {
  await h?.stop();
});

/** Fires the cron and waits until the queue's consumers have nothing in flight. */
async function cronAndConsumers(worker, side) {
  assert.equal((await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() })).outcome, "ok");
  let progress;
  for (let polls = 0; polls < 60; polls += 1) {
    progress = (await h.request("GET", "/admin/migrate/status", { token: h.adminToken })).json[side];
    if (progress.complete || progress.fanout?.inFlight === 0) break;
    await sleep(250);
  }
  return progress;
}

test("a rollback's reverse sync fans out on the queue and copies phase 4's writes back", async () => {
  await h.seedOld(generateLegacyData({ customers: 495, seed: 13 }));
  for (let i = 0; i < 10; i += 1) await seedCustomer(h, ["old"], sampleRecord(`back_${i}`, `back${i}@example.com`));
  for (const phase of [1, 2, 3]) await h.setPhase(phase);
  const worker = await h.mf.getWorker();
  for (let crons = 0; crons < 60; crons += 1) {
    if ((await cronAndConsumers(worker, "backfill")).complete) break;
  }
  for (let requests = 0; requests < 240; requests += 1) {
    const res = await h.request("POST", "/admin/migrate/verify", { token: h.adminToken, body: { mode: "full" } });
    assert.equal(res.status, 200, res.text);
    if (res.json.complete) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const moved = await h.request("POST", "/admin/migrate/phase", { token: h.adminToken, body: { phase: 4 } });
  assert.equal(moved.status, 200, moved.text);
  for (let i = 0; i < 10; i += 1) {
    const res = await h.request("PATCH", `/customer/back_${i}`, { token: h.serviceToken, body: { name: `Phase 4 #${i}` } });
    assert.equal(res.status, 200, res.text);
  }
  assert.equal(JSON.parse(await h.old().get("customer_back_0")).name, "Test back_0", "phase 4 writes the new store alone");

  const rollback = () => h.request("POST", "/admin/migrate/rollback", { token: h.adminToken, body: { toPhase: 1 } });
  let answer = await rollback();
  assert.equal(answer.status, 409, answer.text);
  let sawChunks = false;
  for (let crons = 0; crons < 60 && answer.status !== 200; crons += 1) {
    const progress = await cronAndConsumers(worker, "reverseSync");
    sawChunks ||= (progress.fanout?.queued ?? 0) > 0;
    answer = await rollback();
  }
  assert.equal(answer.status, 200, answer.text);
  assert.ok(sawChunks, "the status showed the reverse sync's chunks");
  assert.equal(answer.json.rollback.phase, 1);
  for (let i = 0; i < 10; i += 1) {
    assert.equal(JSON.parse(await h.old().get(`customer_back_${i}`)).name, `Phase 4 #${i}`, `back_${i}`);
    const read = await h.request("GET", `/customer/back_${i}`, { token: h.serviceToken });
    assert.equal(read.json?.name, `Phase 4 #${i}`, read.text);
  }
});
