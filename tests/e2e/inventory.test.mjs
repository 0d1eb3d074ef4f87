// A CUSTOMER_KV that already holds customers, in workerd: the CLI takes the inventory
// in phase 0; a customer found only there is served from phase 0 on; the backfill then
// leaves those customers as they are and the full verification reports them apart from
// extras (docs/design.md §16).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { assertError, assertStatus, getJson, kvMigrate, sampleRecord, seedCustomer, startWorker } from "./harness.mjs";

let h;

before(async () => {
  h = await startWorker();
  // Legacy customers, as the OTP service wrote them.
  for (let i = 0; i < 30; i += 1) {
    await seedCustomer(h, ["old"], sampleRecord(`legacy_${i}`, `legacy${i}@example.com`));
  }
  // What a customer API wrote into the new store before the migration: a customer of
  // its own, and a legacy customer it edited (with an older updatedAt than the old store's).
  await seedCustomer(h, ["new"], sampleRecord("api_only", "api-only@example.com", { updatedAt: "2025-01-01T00:00:00Z" }));
  const edited = sampleRecord("legacy_3", "legacy3@example.com", { name: "Edited by the API", updatedAt: "2019-01-01T00:00:00Z" });
  await h.new().put("customer_legacy_3", JSON.stringify(edited));
});
after(async () => {
  await h?.stop();
});

test("the inventory sorts what the new store held, through the CLI", async () => {
  const run = await kvMigrate(h, ["inventory"]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /inventory complete: 3 customer keys in CUSTOMER_KV; 2 only there, 0 equal to OTP_AUTH_KV's, 1 different/);
  assert.match(run.stdout, /different: customer_legacy_3/);
  const status = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
  assertStatus(status, 200);
  assert.equal(status.json.inventory.newOnly.count, 2);
});

test("in phase 0 a customer found only in the new store is served, and written there", async () => {
  const read = await h.request("GET", "/customer/api_only", { token: h.serviceToken });
  assertStatus(read, 200);
  assert.equal(read.json.customerId, "api_only");
  const byEmail = await h.request("GET", "/customer/by-email/api-only@example.com", { token: h.serviceToken });
  assertStatus(byEmail, 200);
  assert.equal(byEmail.json.customerId, "api_only");
  const patched = await h.request("PATCH", "/customer/api_only", { token: h.serviceToken, body: { name: "Renamed in phase 0" } });
  assertStatus(patched, 200);
  assert.equal((await getJson(h.new(), "customer_api_only")).name, "Renamed in phase 0");
  assert.equal(await h.old().get("customer_api_only"), null, "the old store never receives it");
  assertError(
    await h.request("POST", "/customer", { token: h.serviceToken, body: { email: "api-only@example.com", name: "Someone else" } }),
    409,
    "email_taken",
  );
});

test("after it, the backfill keeps them and the verification counts them apart", async () => {
  await h.setPhase(3);
  for (let round = 0; round < 20; round += 1) {
    const res = await h.request("POST", "/admin/migrate/backfill", { token: h.adminToken, body: {} });
    assertStatus(res, 200);
    if (res.json.progress.complete) break;
  }
  assert.equal((await getJson(h.new(), "customer_legacy_3")).name, "Edited by the API");
  assert.equal((await getJson(h.new(), "customer_legacy_4")).name, "Test legacy_4");
  const verified = await h.request("POST", "/admin/migrate/verify", { token: h.adminToken, body: { mode: "full" } });
  assertStatus(verified, 200);
  assert.equal(verified.json.complete, true);
  assert.equal(verified.json.extra.count, 0, verified.text);
  assert.equal(verified.json.preexisting.count, 2, verified.text);
  assert.deepEqual(verified.json.mismatched.keys, ["customer_legacy_3"]);
  // Past phase 0 the inventory cannot be taken: the migration's copies are in the store.
  assertError(await h.request("POST", "/admin/migrate/inventory", { token: h.adminToken, body: {} }), 409, "inventory_not_allowed");
});

test("the customer it kept is listed as a conflict with both values, through the CLI", async () => {
  const listed = await kvMigrate(h, ["conflicts", "--all"]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /customer_legacy_3 \(the new store held it before the migration; found .*; open\)/);
  assert.match(listed.stdout, /new: .*Edited by the API/);
  assert.match(listed.stdout, /old: .*Test legacy_3/);
  const asJson = await kvMigrate(h, ["conflicts", "--json"]);
  assert.equal(asJson.code, 0, asJson.stderr);
  const page = JSON.parse(asJson.stdout);
  assert.deepEqual(page.conflicts.map((c) => [c.key, c.kind, c.settled]), [["customer_legacy_3", "preexisting", false]]);
  assert.equal(page.complete, true);
});

test("written through the API, the conflict is settled and the CLI prunes it", async () => {
  const written = await h.request("PATCH", "/customer/legacy_3", { token: h.serviceToken, body: { name: "Decided" } });
  assertStatus(written, 200);
  const pruned = await kvMigrate(h, ["conflicts", "--prune"]);
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.match(pruned.stdout, /1 conflict entries checked, 1 settled ones removed/);
  const listed = await kvMigrate(h, ["conflicts"]);
  assert.match(listed.stdout, /no conflicts/);
});

test("a conflict is settled by a rule through the CLI: a dry run first, then in both stores", async () => {
  const old = { customerId: "pair_1", email: "pair1@example.com", name: "Old side" };
  await h.old().put("customer_pair_1", JSON.stringify(old));
  await h.new().put("customer_pair_1", JSON.stringify({ ...old, name: "New side" }));
  // What the backfill writes for a pair without updatedAt (docs/design.md §6).
  const entry = { key: "customer_pair_1", kind: "unordered", foundAt: Date.now() };
  await h.new().put("__migration/conflict/customer_pair_1", JSON.stringify(entry));

  const dry = await kvMigrate(h, ["conflicts", "--settle", "keep-new", "--key", "customer_pair_1", "--dry-run"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /customer_pair_1: would write \(new\)/);
  assert.equal((await getJson(h.old(), "customer_pair_1")).name, "Old side", "a dry run writes nothing");

  const settled = await kvMigrate(h, ["conflicts", "--settle", "keep-new", "--yes"]);
  assert.equal(settled.code, 0, settled.stderr);
  assert.match(settled.stdout, /customer_pair_1: written \(new\)/);
  assert.match(settled.stdout, /total: 1 written/);
  assert.equal((await getJson(h.old(), "customer_pair_1")).name, "New side");
  assert.equal(await h.new().get("__migration/conflict/customer_pair_1"), null, "the entry is removed");
  const audit = await h.request("GET", "/admin/migrate/audit", { token: h.adminToken });
  assert.match(audit.text, /conflicts_settled/);
  assert.match(audit.text, /customer_pair_1 \(new\)/);
});

test("rolled back for good, the CLI purges what the migration wrote and keeps what was there before", async () => {
  for (const phase of [2, 1, 0]) await h.setPhase(phase);
  const dry = await kvMigrate(h, ["purge-new", "--dry-run"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /would remove \d+; kept 3 the inventory found before the migration/);
  assert.notEqual(await h.new().get("customer_legacy_4"), null, "a dry run removes nothing");

  const refused = await kvMigrate(h, ["purge-new"]);
  assert.equal(refused.code, 8, "without a terminal or --yes it asks and refuses");
  const purged = await kvMigrate(h, ["purge-new", "--yes"]);
  assert.equal(purged.code, 0, purged.stderr);
  assert.match(purged.stdout, /removed \d+; kept 3/);
  assert.equal(await h.new().get("customer_legacy_4"), null, "a copy is gone");
  assert.equal((await getJson(h.new(), "customer_api_only")).customerId, "api_only", "a customer only the new store held stays");
  assert.notEqual(await h.new().get("customer_legacy_3"), null, "a customer the API had edited stays");
  assert.notEqual(await h.old().get("customer_legacy_4"), null, "the old store is untouched");
  const audit = await h.request("GET", "/admin/migrate/audit", { token: h.adminToken });
  assert.match(audit.text, /new_store_purged/);
});
