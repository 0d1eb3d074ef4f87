// Finalizing the migration in workerd (docs/design.md §9, "Finalizing"): through the CLI,
// after phase 5 and an email audit run in it; the coordinator Durable Object keeps the
// finalized record, and no move is possible after it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { assertError, assertStatus, kvMigrate, sampleRecord, seedCustomer, startWorker } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker({ bindings: { VERIFICATION_PERIOD_SECONDS: "0" } });
  for (let i = 0; i < 5; i += 1) {
    await seedCustomer(h, ["old", "new"], sampleRecord(`final_${i}`, `final${i}@example.com`));
  }
  for (const phase of [1, 2, 3, 4, 5]) await h.setPhase(phase);
});
after(async () => {
  await h?.stop();
});

test("the CLI finalizes once an email audit ran in phase 5, and no move is possible after", async () => {
  const early = await kvMigrate(h, ["finalize", "--dry-run"]);
  assert.equal(early.code, 3, early.stdout + early.stderr);
  assert.match(early.stdout, /not ready to finalize:[\s\S]*email audit/);

  const audited = await kvMigrate(h, ["emails"]);
  assert.equal(audited.code, 0, audited.stderr);
  const ready = await kvMigrate(h, ["finalize", "--dry-run"]);
  assert.equal(ready.code, 0, ready.stdout + ready.stderr);
  assert.match(ready.stdout, /ready to finalize/);

  const done = await kvMigrate(h, ["finalize", "--yes"]);
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stdout, /finalized .*export it/);

  const forced = await h.request("POST", "/admin/migrate/phase", {
    token: h.adminToken,
    body: { phase: 4, force: true, reason: "after finalize" },
  });
  assertError(forced, 409, "phase_change_refused", "a forced move after finalize");
  assertError(await h.request("POST", "/admin/migrate/verify", { token: h.adminToken, body: {} }), 409, "finalized");
  const read = await h.request("GET", "/customer/final_1", { token: h.serviceToken });
  assertStatus(read, 200, "reads go on from CUSTOMER_KV");
});
