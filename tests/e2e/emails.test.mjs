// The email-mapping audit in workerd over the seeded legacy data: after an admin
// backfill in phase 2, the un-normalised mapping is re-keyed, the shared email is
// reported as a conflict and the orphan mapping as an orphan.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { MESSY, generateLegacyData } from "../../scripts/legacy-data.mjs";
import { kvMigrate, startWorker } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
  await h.reset();
  const old = h.old();
  for (const { key, value, expiration, metadata } of generateLegacyData({ customers: 150, seed: 3 })) {
    await old.put(key, value, { ...(expiration ? { expiration } : {}), ...(metadata ? { metadata } : {}) });
  }
  await h.setPhase(1);
  await h.setPhase(2);
});
after(async () => {
  await h?.stop();
});

const byEmail = (email) => h.request("GET", `/customer/by-email/${encodeURIComponent(email)}`, { token: h.serviceToken });

async function emails(body) {
  const res = await h.request("POST", "/admin/migrate/emails", { token: h.adminToken, body });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.complete, true, res.text);
  return res.json;
}

test("an admin backfill batch, then the email audit: dry run first, then the repair", async () => {
  const batch = await h.request("POST", "/admin/migrate/backfill", { token: h.adminToken, body: {} });
  assert.equal(batch.status, 200, batch.text);
  assert.equal(batch.json.progress.complete, true, batch.text);

  const m = MESSY.unnormalisedEmail;
  assert.equal((await byEmail(m.email)).status, 404, "not found by email before the repair");

  const dry = await emails({ dryRun: true });
  assert.equal(await h.new().get(m.correctMappingKey), null, "a dry run writes no mapping");
  const report = await emails({ dryRun: false });
  for (const field of ["derived", "rekeyed", "conflicts", "orphans"]) {
    assert.equal(dry[field], report[field], `dry run and repair agree on ${field}: ${JSON.stringify(report)}`);
  }
  assert.ok(report.derived >= 1 && report.rekeyed >= 1, JSON.stringify(report));
  assert.equal(report.conflicts, 1, JSON.stringify(report));
  assert.ok(report.conflictSamples[0].includes(MESSY.sharedEmail.customerIds[1]));
  assert.equal(report.orphans, 1, JSON.stringify(report));
  assert.ok(report.orphanSamples[0].includes(MESSY.orphanMapping.customerId));

  for (const email of [m.email, m.email.toLowerCase(), m.rawEmail]) {
    const res = await byEmail(email);
    assert.equal(res.status, 200, `${JSON.stringify(email)}: ${res.text}`);
    assert.equal(res.json.customerId, m.customerId);
  }
  for (const kv of [h.old(), h.new()]) {
    assert.equal(await kv.get(m.mappingKey), null, "the un-normalised mapping is gone from both stores");
    assert.equal(await kv.get(m.correctMappingKey), m.customerId);
  }
  const shared = await byEmail(MESSY.sharedEmail.email);
  assert.equal(shared.json.customerId, MESSY.sharedEmail.mappedTo, "the conflict was not overwritten");

  // Listed in full (the report samples 20): the conflict and the orphan, by mapping key.
  const issues = await h.request("GET", "/admin/migrate/emails/issues", { token: h.adminToken });
  assert.equal(issues.status, 200, issues.text);
  const kinds = issues.json.issues.map((i) => i.kind).sort();
  assert.deepEqual(kinds, ["conflict", "orphan"], issues.text);
  const orphan = issues.json.issues.find((i) => i.kind === "orphan");
  assert.deepEqual(orphan.customers, [MESSY.orphanMapping.customerId]);
  const listed = await kvMigrate(h, ["emails", "--issues"]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /conflict, held by .* and /);
  assert.match(listed.stdout, /orphan, names .* which does not exist/);
});
