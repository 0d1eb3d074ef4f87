// Finalizing the migration in workerd (docs/design.md §9, "Finalizing"): through the CLI,
// after phase 5 and an email audit run in it; the coordinator Durable Object keeps the
// finalized record, and no move is possible after it.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { assertError, assertStatus, kvMigrate, sampleRecord, seedCustomer, startWorker } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker({ bindings: { VERIFICATION_PERIOD_SECONDS: "0" } });
  for (let i = 0; i < 5; i += 1) {
    await seedCustomer(h, ["old", "new"], sampleRecord(`final_${i}`, `final${i}@example.com`));
  }
  for (const phase of [1, 2, 3]) await h.setPhase(phase);
  // A customer deleted during the migration leaves a tombstone in CUSTOMER_KV.
  assertStatus(await h.request("DELETE", "/customer/final_0", { token: h.serviceToken }), 200, "delete");
  for (const phase of [4, 5]) await h.setPhase(phase);
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

  // The working keys: exported by the CLI, then removed; the phase record and the audit stay.
  // Run state lives in the coordinator's ledger here; KV holds entries such as the
  // inventory's marks and fallback hits.
  await h.new().put("__migration/preexisting/customer_final_3", JSON.stringify({ found: "same", at: 1, digest: "" }));
  await h.new().put("__migration/fallback/customer_final_4", JSON.stringify({ at: 1 }));
  const file = join(tmpdir(), `working-keys-${process.pid}.ndjson`);
  const purged = await kvMigrate(h, ["finalize", "--purge-working-keys", "--export", file, "--yes"]);
  assert.equal(purged.code, 0, purged.stdout + purged.stderr);
  assert.match(purged.stdout, /working keys: removed 2 of \d+ listed; kept \d+/);
  const exported = readFileSync(file, "utf8").trim().split("\n").map((line) => JSON.parse(line).key);
  assert.ok(exported.includes("__migration/preexisting/customer_final_3"), exported.join());
  assert.ok(exported.includes("__migration/fallback/customer_final_4"), exported.join());
  const left = (await h.listAll(h.new(), "__migration/")).map((k) => k.name);
  assert.ok(
    left.every((name) => name === "__migration/phase" || name.startsWith("__migration/audit/")),
    left.join(),
  );
  assert.ok(left.includes("__migration/phase"));
  assertStatus(await h.request("GET", "/customer/final_2", { token: h.serviceToken }), 200, "reads after the purge");

  // The tombstones: each removed in its customer's object, written to the export first.
  assert.match(await h.new().get("customer_final_0"), /__tombstone/);
  const tombstones = join(tmpdir(), `tombstones-${process.pid}.ndjson`);
  const dry = await kvMigrate(h, ["finalize", "--purge-tombstones", "--export", tombstones, "--dry-run"]);
  assert.equal(dry.code, 0, dry.stdout + dry.stderr);
  assert.match(dry.stdout, /tombstones: would remove 1 of 1 found among 5 customer keys/);
  assert.match(await h.new().get("customer_final_0"), /__tombstone/, "a dry run removes nothing");
  const cleared = await kvMigrate(h, ["finalize", "--purge-tombstones", "--export", tombstones, "--yes"]);
  assert.equal(cleared.code, 0, cleared.stdout + cleared.stderr);
  assert.match(cleared.stdout, /tombstones: removed 1 of 1 found among 5 customer keys/);
  const lines = readFileSync(tombstones, "utf8").trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(lines.map((line) => line.key), ["customer_final_0"]);
  assert.match(lines[0].value, /__tombstone/);
  assert.equal(await h.new().get("customer_final_0"), null);
  assertStatus(await h.request("GET", "/customer/final_0", { token: h.serviceToken }), 404, "still deleted");
  const again = await h.request("POST", "/customer", {
    token: h.serviceToken,
    body: { customerId: "final_0", email: "again0@example.com" },
  });
  assertStatus(again, 201, "created again after the purge");
  const deleted = await h.request("DELETE", "/customer/final_0", { token: h.serviceToken });
  assertStatus(deleted, 200, "delete once finalized");
  assert.equal(await h.new().get("customer_final_0"), null, "once finalized a delete leaves no tombstone");
});

test("finalized, the worker runs with OTP_AUTH_KV's binding removed", async () => {
  const unbound = await startWorker({ kvNamespaces: ["CUSTOMER_KV"] });
  try {
    await seedCustomer(unbound, ["new"], sampleRecord("kept_1", "kept1@example.com"));
    const finalized = {
      phase: 5,
      changedAt: 1,
      changedBy: "e2e",
      newStoreDiverged: false,
      oldStoreDiverged: true,
      leftOldStoreAt: 1,
      revision: 9,
      finalizedAt: 2,
    };
    await unbound.new().put("__migration/phase", JSON.stringify(finalized));
    assertStatus(await unbound.request("GET", "/customer/kept_1", { token: unbound.serviceToken }), 200, "read");
    const byEmail = await unbound.request("GET", "/customer/by-email/kept1@example.com", { token: unbound.serviceToken });
    assertStatus(byEmail, 200, "read by email");
    const patched = await unbound.request("PATCH", "/customer/kept_1", { token: unbound.serviceToken, body: { name: "after" } });
    assertStatus(patched, 200, "write");
    const ready = await unbound.request("GET", "/admin/migrate/ready", { token: unbound.adminToken });
    assertStatus(ready, 200, `ready without OTP_AUTH_KV once finalized: ${ready.text}`);
    const status = await unbound.request("GET", "/admin/migrate/status", { token: unbound.adminToken });
    assertStatus(status, 200, "status");
    assert.equal(status.json.phase.finalizedAt, 2);

    // Not finalized, the missing binding fails what needs it, loudly.
    await unbound.new().put("__migration/phase", JSON.stringify({ ...finalized, finalizedAt: undefined, revision: 10 }));
    const notReady = await unbound.request("GET", "/admin/migrate/ready", { token: unbound.adminToken });
    assert.equal(notReady.status, 503, notReady.text);
    assert.equal(notReady.json.oldStore.ok, false);
  } finally {
    await unbound.stop();
  }
});
