// Alerts in workerd: with ALERT_WEBHOOK_URL set, a phase move and a forced move are
// posted to the webhook (Slack-compatible JSON) after the response; logs stay JSON.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { assertStatus, startWorker } from "./harness.mjs";

let h;
let server;
const received = [];

before(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      received.push({ method: req.method, type: req.headers["content-type"], body: JSON.parse(body) });
      res.writeHead(200).end("ok");
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}/hook`;
  h = await startWorker({ bindings: { ALERT_WEBHOOK_URL: url } });
});
after(async () => {
  await h?.stop();
  server?.close();
});

async function until(predicate) {
  for (let i = 0; i < 100 && !predicate(); i += 1) await new Promise((r) => setTimeout(r, 50));
  return predicate();
}

test("phase moves, forced or not, reach the webhook", async () => {
  const move = await h.request("POST", "/admin/migrate/phase", { token: h.adminToken, body: { phase: 1 } });
  assertStatus(move, 200);
  assert.ok(await until(() => received.length >= 1), "the move's alert arrived");
  assert.equal(received[0].method, "POST");
  assert.equal(received[0].type, "application/json");
  assert.deepEqual(received[0].body, { text: "[customer-kv-migration] phase moved 0 → 1", kind: "phase_changed" });

  const forced = await h.request("POST", "/admin/migrate/phase", {
    token: h.adminToken,
    body: { phase: 4, force: true, reason: "alert drill" },
  });
  assertStatus(forced, 200);
  assert.ok(await until(() => received.length >= 2), "the forced move's alert arrived");
  assert.equal(received[1].body.kind, "phase_forced");

  // Ordinary traffic posts nothing.
  const created = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: "quiet_one" } });
  assertStatus(created, 201);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(received.length, 2);
});
