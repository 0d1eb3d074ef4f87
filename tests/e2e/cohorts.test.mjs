// Cohorts in workerd (docs/design.md §17): named customers and a share served by the next
// phase ahead of everyone, through the CLI and the API; the coordinator Durable Object
// keeps the cohort, the customers' objects write by it, and the audit names no id.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { assertError, assertStatus, customerKey, getJson, kvMigrate, sampleRecord, seedCustomer, startWorker } from "./harness.mjs";

const IDS = ["coh_a", "coh_b", "coh_c", "coh_d"];

let h;
before(async () => {
  h = await startWorker();
  // The old store says "old", the new one "new": phase 1 reads the old store alone,
  // phase 2 the new one first, so each answer tells which phase served it.
  for (const id of IDS) {
    await seedCustomer(h, ["old"], sampleRecord(id, `${id}@example.com`, { name: "old" }));
    await seedCustomer(h, ["new"], sampleRecord(id, `${id}@example.com`, { name: "new" }));
  }
  await h.setPhase(1);
});
after(async () => {
  await h?.stop();
});

async function nameOf(id) {
  const res = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
  assertStatus(res, 200, `GET ${id}`);
  return res.json.name;
}

test("a named customer moves first, a share widens it, and the move of the phase completes it", async () => {
  const opened = await kvMigrate(h, ["cohort", "--to", "2", "--customer", "coh_a", "--reason", "canary", "--yes"]);
  assert.equal(opened.code, 0, opened.stdout + opened.stderr);
  assert.match(opened.stdout, /cohort opened: 0% of customers and 1 named customer\(s\) in phase 2/);
  assert.equal(await nameOf("coh_a"), "new");
  for (const id of ["coh_b", "coh_c", "coh_d"]) assert.equal(await nameOf(id), "old", id);

  // The customer's object writes by the cohort's phase: new store first, then the old.
  const patched = await h.request("PATCH", "/customer/coh_a", { token: h.serviceToken, body: { name: "patched" } });
  assertStatus(patched, 200, "PATCH in the cohort");
  assert.equal((await getJson(h.new(), customerKey("coh_a"))).name, "patched");
  assert.equal((await getJson(h.old(), customerKey("coh_a"))).name, "patched");

  const status = await kvMigrate(h, ["status"]);
  assert.match(status.stdout, /cohort: 0% of customers and 1 named customer\(s\) in phase 2/);
  assert.match(status.stdout, /cohort cancel/);

  // Nothing else moves while it is open.
  const elsewhere = await h.request("POST", "/admin/migrate/phase", {
    token: h.adminToken,
    body: { phase: 0, force: true, reason: "e2e" },
  });
  assertError(elsewhere, 409, "cohort_refused", "a move away from the cohort");
  const planned = await kvMigrate(h, ["phase", "0", "--dry-run"]);
  assert.equal(planned.code, 3, planned.stdout + planned.stderr);

  const widened = await h.request("POST", "/admin/migrate/cohort", { token: h.adminToken, body: { to: 2, percent: 100 } });
  assertStatus(widened, 200, "widen to everyone");
  assert.equal(widened.json.done, "widened");
  assert.deepEqual(widened.json.phase.cohort.customers, ["coh_a"]);
  for (const id of ["coh_b", "coh_c", "coh_d"]) assert.equal(await nameOf(id), "new", id);

  const completed = await kvMigrate(h, ["phase", "2"]);
  assert.equal(completed.code, 0, completed.stdout + completed.stderr);
  const after = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
  assert.equal(after.json.phase.current, 2);
  assert.equal(after.json.phase.cohort, undefined);
});

test("a cancel takes the cohort back, and the audit keeps every step without an id", async () => {
  // The completion above must settle before a cohort opens again (2 s locally).
  let opened;
  for (let i = 0; i < 40; i += 1) {
    opened = await h.request("POST", "/admin/migrate/cohort", {
      token: h.adminToken,
      body: { to: 1, customers: ["coh_b"], force: true, reason: "drill" },
    });
    if (opened.status === 200) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assertStatus(opened, 200, `open a cohort back in phase 1: ${opened.text}`);
  assert.equal(await nameOf("coh_b"), "old", "phase 1 reads the old store");
  assert.equal(await nameOf("coh_c"), "new");

  const cancelled = await kvMigrate(h, ["cohort", "--cancel", "--yes"]);
  assert.equal(cancelled.code, 0, cancelled.stdout + cancelled.stderr);
  assert.match(cancelled.stdout, /cohort cancelled: everyone in phase 2/);
  assert.equal(await nameOf("coh_b"), "new");

  const audit = await h.request("GET", "/admin/migrate/audit?limit=20", { token: h.adminToken });
  const actions = audit.json.entries.map((e) => e.action);
  for (const action of ["cohort_opened", "cohort_widened", "cohort_cancelled"]) {
    assert.ok(actions.includes(action), `${action} in ${actions}`);
  }
  assert.doesNotMatch(audit.text, /coh_a|coh_b/, "the audit names no customer");
});

test("bad cohort requests answer 400 without echoing the id", async () => {
  const bad = await h.request("POST", "/admin/migrate/cohort", {
    token: h.adminToken,
    body: { to: 3, customers: ["secret@example.com\u0000"] },
  });
  assertError(bad, 400, "invalid_body", "a control character in an id");
  assert.doesNotMatch(bad.text, /secret@/);
  const refused = await h.request("POST", "/admin/migrate/cohort", { token: h.serviceToken, body: { to: 3, percent: 5 } });
  assert.equal(refused.status, 403);
});
