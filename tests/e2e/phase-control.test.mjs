// Phase control through the admin API: adjacent moves, refused skips, forced moves with
// a reason, the audit history, the stored phase key and /health (DESIGN.md §3,
// docs/http-api.md "Admin API").

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { PHASE_KEY, assertError, assertStatus, getJson, startWorker } from "./harness.mjs";

let h;
let admin;
const ADMIN_SUB = "e2e-phase-admin";

before(async () => {
  h = await startWorker();
  await h.reset();
  admin = h.token({ role: "admin", sub: ADMIN_SUB });
});
after(async () => {
  await h?.stop();
});

/** The fields of a phase-change answer the contract names (extra fields are allowed). */
const change = (json) => ({ phase: json?.phase, previous: json?.previous, forced: json?.forced });

const setPhase = (body) => h.request("POST", "/admin/migrate/phase", { token: admin, body });
const status = async () => {
  const res = await h.request("GET", "/admin/migrate/status", { token: admin });
  assertStatus(res, 200, "GET /admin/migrate/status");
  return res.json;
};

// The contract names the audit entry's content (who, when, from, to, why) but not its
// keys; accept the usual spellings.
const field = (entry, names) => {
  for (const name of names) if (entry[name] !== undefined) return entry[name];
  return undefined;
};
const who = (e) => field(e, ["who", "by", "actor", "changedBy", "sub"]);
const from = (e) => field(e, ["from", "previous", "fromPhase"]);
const to = (e) => field(e, ["to", "phase", "toPhase"]);
const why = (e) => field(e, ["reason", "why"]);

test("a fresh deployment runs the default phase 0 (source: default)", async () => {
  const health = await h.request("GET", "/health");
  assertStatus(health, 200, "GET /health");
  assert.deepEqual(health.json, { status: "ok", phase: 0, phaseName: "legacy" });
  const s = await status();
  assert.equal(s.phase.current, 0);
  assert.equal(s.phase.name, "legacy");
  assert.equal(s.phase.source, "default");
  assert.deepEqual(s.history, []);
  assert.equal(await h.new().get(PHASE_KEY), null);
});

test("phase 0 → 1 (adjacent) is accepted without force", async () => {
  const res = await setPhase({ phase: 1 });
  assertStatus(res, 200, "0 → 1");
  assert.deepEqual(change(res.json), { phase: 1, previous: 0, forced: false });
  assert.equal((await h.request("GET", "/health")).json.phase, 1);
  const stored = await getJson(h.new(), PHASE_KEY);
  assert.equal(stored.phase, 1);
  assert.equal(stored.changedBy, ADMIN_SUB);
  assert.equal(typeof stored.changedAt, "number");
});

test("phase 1 → 3 without force: 409 phase_change_refused", async () => {
  assertError(await setPhase({ phase: 3 }), 409, "phase_change_refused");
  assert.equal((await h.request("GET", "/health")).json.phase, 1, "the phase did not change");
});

test("phase 1 → 3 with force but without a reason: 400 reason_required", async () => {
  assertError(await setPhase({ phase: 3, force: true }), 400, "reason_required", "no reason");
  assertError(await setPhase({ phase: 3, force: true, reason: "   " }), 400, "reason_required", "blank reason");
  assert.equal((await h.request("GET", "/health")).json.phase, 1, "the phase did not change");
});

test("phase 1 → 3 forced with a reason is accepted", async () => {
  const res = await setPhase({ phase: 3, force: true, reason: "skip read_new in the e2e run" });
  assertStatus(res, 200, "forced 1 → 3");
  assert.deepEqual(change(res.json), { phase: 3, previous: 1, forced: true });
});

test("GET /admin/migrate/status shows the current phase and the audit history, newest first", async () => {
  const s = await status();
  assert.equal(s.phase.current, 3);
  assert.equal(s.phase.name, "backfill");
  assert.equal(s.phase.source, "stored");
  assert.ok(Array.isArray(s.history) && s.history.length >= 2, `history: ${JSON.stringify(s.history)}`);
  const [latest, earlier] = s.history;
  assert.equal(who(latest), ADMIN_SUB, `latest entry: ${JSON.stringify(latest)}`);
  assert.equal(from(latest), 1, `latest entry: ${JSON.stringify(latest)}`);
  assert.equal(to(latest), 3, `latest entry: ${JSON.stringify(latest)}`);
  assert.equal(why(latest), "skip read_new in the e2e run", `latest entry: ${JSON.stringify(latest)}`);
  assert.equal(from(earlier), 0, `earlier entry: ${JSON.stringify(earlier)}`);
  assert.equal(to(earlier), 1, `earlier entry: ${JSON.stringify(earlier)}`);
  assert.equal(s.repairJournal?.count, 0, `repairJournal (contract: {"count": N, "exact": bool, "keys": [...]}): ${JSON.stringify(s.repairJournal)}`);
  assert.equal(typeof s.fallbackHits.count, "number");
});

test("/health shows the phase", async () => {
  const res = await h.request("GET", "/health");
  assertStatus(res, 200, "GET /health");
  assert.deepEqual(res.json, { status: "ok", phase: 3, phaseName: "backfill" });
});

test("phase 3 → 4 without a clean verification is refused by its gate; forcing needs a reason", async () => {
  assertError(await setPhase({ phase: 4 }), 409, "phase_change_refused", "unforced 3 → 4");
  assertError(await setPhase({ phase: 4, force: true }), 400, "reason_required", "forced without reason");
  assert.equal((await h.request("GET", "/health")).json.phase, 3);
});

test("an out-of-range or non-numeric phase: 400 invalid_body", async () => {
  assertError(await setPhase({ phase: 6, force: true, reason: "x" }), 400, "invalid_body", "phase 6");
  assertError(await setPhase({ phase: -1, force: true, reason: "x" }), 400, "invalid_body", "phase -1");
  assertError(await setPhase({ phase: "2" }), 400, "invalid_body", 'phase "2"');
  assertError(await setPhase({}), 400, "invalid_body", "no phase");
  assert.equal((await h.request("GET", "/health")).json.phase, 3);
});

test("malformed JSON to the phase endpoint: 400 invalid_json", async () => {
  const res = await h.request("POST", "/admin/migrate/phase", { token: admin, rawBody: "{phase: 2" });
  assertError(res, 400, "invalid_json");
});

test("the change takes effect on the next request (PHASE_CACHE_SECONDS=0)", async () => {
  const res = await setPhase({ phase: 2 });
  assertStatus(res, 200, "3 → 2 (adjacent rollback)");
  assert.deepEqual(change(res.json), { phase: 2, previous: 3, forced: false });
  assert.deepEqual((await h.request("GET", "/health")).json, { status: "ok", phase: 2, phaseName: "read_new" });
});

test("concurrent moves from a settled phase: exactly one succeeds, the other is refused naming the winner", async () => {
  for (let trial = 0; trial < 10; trial++) {
    assertStatus(await setPhase({ phase: 1, force: true, reason: "concurrency trial" }), 200, "back to phase 1");
    const before = (await status()).recentAudit.length;
    const [up, down] = await Promise.all([setPhase({ phase: 2 }), setPhase({ phase: 0 })]);
    const answers = [up, down].map((r) => r.status).sort();
    assert.deepEqual(answers, [200, 409], `trial ${trial}: ${up.text} / ${down.text}`);
    const winner = up.status === 200 ? up : down;
    const loser = up.status === 200 ? down : up;
    assert.ok(
      ["phase_moved", "phase_change_refused"].includes(loser.json.error.code),
      `trial ${trial}: the losing move answered ${loser.text}`,
    );
    assert.match(loser.json.error.message, new RegExp(`${winner.json.phase}`), "the refusal names the phase that won");
    const after = await status();
    assert.equal(after.phase.current, winner.json.phase, "the stored phase is the winner's");
    assert.equal(after.recentAudit.length, before + 1, "one move audited");
  }
});
