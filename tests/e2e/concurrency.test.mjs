// Concurrent writers in workerd (docs/design.md §12): every write of a customer runs in
// that customer's Durable Object and every claim of an email in the email's, so racing
// requests never lose an acknowledged write, never make two customers of one email and
// never create one id twice; concurrent phase moves go through the coordinator (§11).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertStatus, startWorker, uniqueCustomer } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
  await h.reset();
});
after(async () => {
  await h?.stop();
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends a request as a well-behaved client does: a 429 (KV's one write a second to one
 * key) is retried after its Retry-After. Any other answer is returned.
 */
async function politely(method, path, body) {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const res = await h.request(method, path, { token: h.serviceToken, body });
    if (res.status !== 429) return res;
    assert.ok(res.headers.get("retry-after"), "a 429 names when to retry");
    // Spread the retries over the second so they do not arrive together again.
    await sleep(1000 * Number(res.headers.get("retry-after")) * (0.5 + Math.random()));
  }
  throw new Error(`${method} ${path}: still rate limited after 200 attempts`);
}

for (const phase of [0, 1, 3, 5]) {
  describe(`phase ${phase}`, () => {
    before(async () => {
      await h.setPhase(phase);
    });

    test("30 concurrent PATCHes adding distinct fields keep all 30", async () => {
      const c = uniqueCustomer(`patch_p${phase}`);
      const created = await politely("POST", "/customer", { customerId: c.id, email: c.email });
      assertStatus(created, 201, "create");
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          politely("PATCH", `/customer/${c.id}`, { metadata: { [`f${i}`]: i } }),
        ),
      );
      for (const res of answers) assertStatus(res, 200, "PATCH");
      const read = await h.request("GET", `/customer/${c.id}`, { token: h.serviceToken });
      assertStatus(read, 200, "read back");
      const kept = Object.keys(read.json.metadata ?? {}).filter((k) => /^f\d+$/.test(k));
      assert.equal(kept.length, 30, `fields kept: ${kept.sort().join(",")}`);
    });

    test("4 concurrent ensures of one email give one customer and one 201", async () => {
      const c = uniqueCustomer(`ensure_p${phase}`);
      const answers = await Promise.all(
        Array.from({ length: 4 }, () => politely("POST", "/customer/ensure", { email: c.email })),
      );
      const statuses = answers.map((r) => r.status).sort();
      for (const res of answers) {
        // A request that found the email's claim still being written is told to retry.
        assert.ok([200, 201, 409].includes(res.status), `ensure answered ${res.status} ${res.text}`);
        if (res.status === 409) assert.equal(res.json.error.code, "email_being_claimed");
      }
      assert.equal(statuses.filter((s) => s === 201).length, 1, `statuses ${statuses}`);
      const ids = new Set(answers.filter((r) => r.status < 300).map((r) => r.json.customerId));
      assert.equal(ids.size, 1, `customers: ${[...ids]}`);
      const byEmail = await h.request("GET", `/customer/by-email/${encodeURIComponent(c.email)}`, {
        token: h.serviceToken,
      });
      assertStatus(byEmail, 200, "by email");
      assert.equal(byEmail.json.customerId, [...ids][0]);
    });

    test("4 concurrent creates of one email with distinct ids make one customer", async () => {
      const c = uniqueCustomer(`email_p${phase}`);
      const answers = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          politely("POST", "/customer", { customerId: `${c.id}_${i}`, email: c.email }),
        ),
      );
      const created = answers.filter((r) => r.status === 201);
      assert.equal(created.length, 1, `statuses ${answers.map((r) => r.status)}`);
      for (const res of answers.filter((r) => r.status !== 201)) {
        assert.equal(res.status, 409, res.text);
        assert.equal(res.json.error.code, "email_taken");
      }
    });

    test("concurrent creates of one id give one 201", async () => {
      const c = uniqueCustomer(`id_p${phase}`);
      const answers = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          politely("POST", "/customer", { customerId: c.id, email: `${i}.${c.email}` }),
        ),
      );
      const statuses = answers.map((r) => r.status).sort();
      assert.deepEqual(statuses, [201, 409, 409, 409], answers.map((r) => r.text).join("\n"));
    });

    test("two owners PATCHing to one email: one wins, the other gets email_taken", async () => {
      const a = uniqueCustomer(`owner_a_p${phase}`);
      const b = uniqueCustomer(`owner_b_p${phase}`);
      assertStatus(await politely("POST", "/customer", { customerId: a.id, email: a.email }), 201);
      assertStatus(await politely("POST", "/customer", { customerId: b.id, email: b.email }), 201);
      const wanted = uniqueCustomer(`wanted_p${phase}`).email;
      const answers = await Promise.all(
        [a, b].map((c) => politely("PATCH", `/customer/${c.id}`, { email: wanted })),
      );
      const statuses = answers.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 409], answers.map((r) => r.text).join("\n"));
    });
  });
}

test("concurrent phase moves: exactly one succeeds, the other is told which won", async () => {
  await h.reset();
  await h.setPhase(1);
  const move = (phase) =>
    h.request("POST", "/admin/migrate/phase", { token: h.adminToken, body: { phase } });
  const answers = await Promise.all([move(2), move(0)]);
  const statuses = answers.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 409], answers.map((r) => r.text).join("\n"));
  const lost = answers.find((r) => r.status === 409);
  assert.ok(["phase_moved", "phase_change_refused"].includes(lost.json.error.code), lost.text);
});
