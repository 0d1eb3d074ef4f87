// Metrics in workerd. With Miniflare's own Analytics Engine binding (a simulator that
// accepts data points and discards them) every kind of request and a cron run still
// succeed. With METRICS bound instead to a recorder that prints each point, the points
// the worker writes are read back: the documented columns, and no email or id.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { assertStatus, startWorker } from "./harness.mjs";

const EMAIL = "metrics.private@e2e.example.com";
const MARK = "metric_point ";

/** A Worker implementing a wrapped binding: writeDataPoint prints the point. */
const RECORDER = {
  name: "metrics-recorder",
  modules: true,
  script: `export default function () {
    return { writeDataPoint(point) { console.log(${JSON.stringify(MARK)} + JSON.stringify(point)); } };
  }`,
};

const started = [];
after(async () => {
  await Promise.all(started.map((h) => h.stop()));
});

/** Creates a customer, reads it by id and by email, misses one, and fires the cron. */
async function traffic(h) {
  const created = await h.request("POST", "/customer", {
    token: h.serviceToken,
    body: { customerId: "metrics_1", email: EMAIL, name: "Metered" },
  });
  assertStatus(created, 201, "create");
  assertStatus(await h.request("GET", "/customer/metrics_1", { token: h.serviceToken }), 200, "get");
  const byEmail = await h.request("GET", `/customer/by-email/${encodeURIComponent(EMAIL)}`, { token: h.serviceToken });
  assertStatus(byEmail, 200, "by email");
  const missing = await h.request("GET", "/customer/by-email/nobody%40e2e.example.com", { token: h.serviceToken });
  assertStatus(missing, 404, "by email, unknown");
  assertStatus(await h.request("GET", "/health"), 200, "health");
  assertStatus(await h.request("GET", "/admin/migrate/ready", { token: h.adminToken }), 200, "ready");
  const worker = await h.mf.getWorker();
  const cron = await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
  assert.equal(cron.outcome, "ok", `the cron run: ${JSON.stringify(cron)}`);
}

/** Options that collect workerd's output into `sink.out`. */
function capturing(sink) {
  return {
    handleRuntimeStdio(stdout, stderr) {
      stdout.on("data", (chunk) => (sink.out += chunk));
      stderr.on("data", (chunk) => (sink.out += chunk));
    },
  };
}

test("with Miniflare's Analytics Engine binding, requests and the cron run as before", async () => {
  const sink = { out: "" };
  const h = await startWorker({
    options: { analyticsEngineDatasets: { METRICS: { dataset: "customer_kv_migration" } } },
    shared: capturing(sink),
  });
  started.push(h);
  await traffic(h);
  // The simulator took every point: none was refused (the worker would log it).
  assert.match(sink.out, /"event":"request"/, "the worker's own log lines are captured");
  assert.doesNotMatch(sink.out, /metrics_unwritten|Rust panic/, sink.out);
});

test("the points written name route templates, statuses and counts, never an email", async () => {
  const sink = { out: "" };
  const h = await startWorker({
    options: { wrappedBindings: { METRICS: { scriptName: RECORDER.name } } },
    sidecars: [RECORDER],
    shared: capturing(sink),
  });
  started.push(h);
  await traffic(h);
  const points = () =>
    sink.out
      .split("\n")
      .filter((line) => line.includes(MARK))
      .map((line) => JSON.parse(line.slice(line.indexOf(MARK) + MARK.length)));
  for (let i = 0; i < 100 && !points().some((p) => p.blobs[0] === "cron"); i += 1) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const written = points();
  const requests = written.filter((p) => p.blobs[0] === "request");
  assert.equal(requests.length, 6, JSON.stringify(written));
  const byEmail = requests.filter((p) => p.blobs[1] === "/customer/by-email/{email}");
  assert.deepEqual(
    byEmail.map((p) => [p.indexes[0], p.blobs[2], p.blobs[3], p.blobs[4], p.blobs[5]]),
    [
      ["/customer/by-email/{email}", "GET", "200", "", "0"],
      ["/customer/by-email/{email}", "GET", "404", "customer_not_found", "0"],
    ],
  );
  for (const point of written) {
    assert.equal(point.blobs.length, 8);
    assert.equal(point.doubles.length, 16);
    assert.ok(point.doubles.every((d) => typeof d === "number"));
    const text = JSON.stringify(point);
    for (const secret of ["@", "metrics.private", "metrics_1", "nobody", "Bearer"]) {
      assert.ok(!text.includes(secret), `${secret} in ${text}`);
    }
  }
  const create = requests.find((p) => p.blobs[1] === "/customer");
  assert.deepEqual([create.blobs[2], create.blobs[3]], ["POST", "201"]);
  assert.ok(create.doubles[1] >= 1, "a create makes KV operations");
  const cron = written.find((p) => p.blobs[0] === "cron");
  assert.deepEqual([cron.indexes[0], cron.blobs[3], cron.blobs[5], cron.blobs[6]], ["cron", "ok", "0", "none"]);
});
