// The backfill fanned out on Miniflare's queues (docs/design.md §13): 20,000 legacy keys
// are listed by the cron, copied by queue consumers while a client keeps writing, and
// verified clean; the gate to phase 4 opens, and every acknowledged write holds.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { generateLegacyData, mulberry32 } from "../../scripts/legacy-data.mjs";
import { kvMigrate, liveClient, startWorker } from "./harness.mjs";

const LEGACY_CUSTOMERS = 9_995; // with their mappings and the messy cases: about 20,000 keys
let h;

before(async () => {
  h = await startWorker({ queue: true });
  await h.seedOld(generateLegacyData({ customers: LEGACY_CUSTOMERS, seed: 11 }));
});
after(async () => {
  await h?.stop();
});

async function backfill() {
  const res = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
  assert.equal(res.status, 200, res.text);
  return res.json.backfill;
}

test("20,000 legacy keys migrate through the queue under live traffic and verify clean", async () => {
  await h.setPhase(1);
  await h.setPhase(2);
  await h.setPhase(3);
  const stop = { done: false };
  const client = liveClient(h, { stop, random: mulberry32(5), legacyCustomers: LEGACY_CUSTOMERS });
  const worker = await h.mf.getWorker();
  const started = Date.now();
  let crons = 0;
  let progress;
  for (; crons < 60; crons += 1) {
    const fired = await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
    assert.equal(fired.outcome, "ok");
    // Consumers copy what the planner queued; wait until none is in flight.
    for (let polls = 0; polls < 120; polls += 1) {
      progress = await backfill();
      if (progress.complete || (progress.fanout && progress.fanout.inFlight === 0)) break;
      await sleep(500);
    }
    if (progress.complete) break;
  }
  stop.done = true;
  const told = await client;
  console.log(
    `fan-out: ${crons + 1} cron runs, ${Date.now() - started} ms, ${progress.counts.scanned} scanned, ` +
      `${progress.counts.copied} copied, pass ${progress.pass}; client: ${told.size} customers written`,
  );
  assert.equal(progress.complete, true, JSON.stringify(progress));
  assert.ok(progress.counts.copied >= 19_000, JSON.stringify(progress.counts));
  // Two passes over about 20,000 keys, each chunk counted once.
  assert.ok(progress.counts.scanned < 2.1 * progress.counts.copied, JSON.stringify(progress.counts));
  assert.equal(progress.fanout?.failed ?? 0, 0);

  // The verification fans out too: the calls walk the listings, consumers compare the
  // values, and a call answers it complete once every chunk is reported.
  let report;
  for (let requests = 0; requests < 240; requests += 1) {
    const res = await h.request("POST", "/admin/migrate/verify", { token: h.adminToken, body: { mode: "full", restart: requests === 0 } });
    assert.equal(res.status, 200, res.text);
    report = res.json;
    if (report.complete) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(report.complete, true, JSON.stringify(report));
  assert.equal(report.missing.count + report.mismatched.count + report.extra.count, 0, JSON.stringify(report));
  assert.ok(report.fanout.queued > 0 && report.fanout.done === report.fanout.queued, JSON.stringify(report.fanout));
  assert.equal(report.fanout.failed.count, 0);
  assert.ok(report.valuesCompared >= 19_000, JSON.stringify(report));
  const moved = await h.request("POST", "/admin/migrate/phase", { token: h.adminToken, body: { phase: 4 } });
  assert.equal(moved.status, 200, `gate 3->4: ${moved.text}`);

  for (const [id, expected] of told) {
    const res = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
    if (expected === "deleted") assert.equal(res.status, 404, `${id} came back`);
    else assert.equal(res.json?.name, expected.name, `${id}: ${res.text}`);
  }
});

test("the command-line client throttles, pauses and resumes a fanned-out backfill and shows its chunks", async () => {
  await h.reset();
  await h.seedOld(generateLegacyData({ customers: 995, seed: 12 }));
  await h.setPhase(1);
  await h.setPhase(2);
  await h.setPhase(3);
  const ok = async (...args) => {
    const run = await kvMigrate(h, args);
    assert.equal(run.code, 0, `kv-migrate ${args.join(" ")} exited ${run.code}\n${run.stdout}\n${run.stderr}`);
    return run;
  };
  // Set before the run fans out, the window holds for its planner.
  await ok("backfill", "throttle", "--max-in-flight", "4");
  const worker = await h.mf.getWorker();
  assert.equal((await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() })).outcome, "ok");
  const paused = JSON.parse((await ok("--json", "backfill", "pause")).stdout).progress;
  assert.equal(paused.paused, true);
  assert.equal(paused.fanout.maxInFlight, 4);
  assert.equal(paused.fanout.queued, 4, JSON.stringify(paused.fanout));
  const shown = await ok("status");
  assert.match(shown.stdout, /backfill .* paused/);
  assert.match(shown.stdout, /chunks: 4 queued, listing, \d+ in flight \(window 4\), \d+ done, 0 failed, \d+ set aside/);

  await ok("backfill", "resume");
  let progress;
  for (let crons = 0; crons < 200; crons += 1) {
    assert.equal((await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() })).outcome, "ok");
    for (let polls = 0; polls < 60; polls += 1) {
      progress = (await h.request("GET", "/admin/migrate/status", { token: h.adminToken })).json.backfill;
      if (progress.complete || progress.fanout?.inFlight === 0) break;
      await sleep(250);
    }
    if (progress.complete) break;
  }
  assert.equal(progress.complete, true, JSON.stringify(progress));
  assert.ok(progress.fanout.maxInFlight === 4, JSON.stringify(progress.fanout));
  // Nothing left to watch: --watch draws once and exits.
  const watched = await ok("status", "--watch", "--interval", "1");
  assert.match(watched.stdout, /complete/);
  // The client's verification waits for the consumers that compare the values.
  const verified = await ok("verify", "--full");
  assert.match(verified.stdout, /full clean/);
  assert.match(verified.stdout, /(\d+) of \1 chunks compared/);
  // The email audit fans out as well: consumers check the records, then the mappings,
  // and repair through the emails' objects; a dry run writes nothing.
  const dry = JSON.parse((await ok("--json", "emails", "--dry-run")).stdout);
  assert.equal(dry.complete && dry.dryRun, true, JSON.stringify(dry));
  assert.ok(dry.fanout.queued > 50 && dry.fanout.done === dry.fanout.queued, JSON.stringify(dry.fanout));
  const audited = await ok("emails");
  const told = audited.stdout.match(/derived (\d+), repointed (\d+), re-keyed (\d+); (\d+) conflicts, (\d+) orphans; (\d+) of \6 chunks audited/);
  assert.ok(told, audited.stdout);
  console.log(`email audit through the queue: ${told[0]}`);
  assert.deepEqual(told.slice(1, 6).map(Number), [dry.derived, dry.repointed, dry.rekeyed, dry.conflicts, dry.orphans], "the dry run foretold the real run");
  const again = JSON.parse((await ok("--json", "emails")).stdout);
  assert.deepEqual([again.derived, again.repointed, again.rekeyed], [0, 0, 0], "a second audit finds nothing to repair");
});
