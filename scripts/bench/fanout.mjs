#!/usr/bin/env node
// Section 7 of BENCHMARKS.md (scripts/bench/run.sh calls it; docs/design.md §13): the same
// synthetic legacy store backfilled by the built worker in local workerd (Miniflare) twice
// in one run, side by side:
//   - cron:  no queue binding; the scheduled event fired back to back until the backfill
//            is complete (in production one fires a minute);
//   - queue: BACKFILL_QUEUE bound as wrangler.toml's queue sections declare it; the cron
//            fired once to plan, again only when nothing is in flight (or a minute after
//            the last), consumers copying the chunks.
// Then, for each: the product's full verification, and an independent comparison of the
// two namespaces key by key (names, bytes, metadata, expirations) by a helper worker.
// Operations per invocation are the worker's own counts (`operations` in its `cron:` and
// `queue:` log lines). Writes fanout.md and fanout.json to --out-dir.
//
// Options: --keys N (100000)  --out-dir DIR (target/bench)  --modes cron,queue

import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";
import { mintToken } from "../dev-token.mjs";
import { generateLegacyData } from "../legacy-data.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SHIM = join(ROOT, "build/worker/shim.mjs");
const NAMESPACES = { OTP_AUTH_KV: "otp-auth-kv-local", CUSTOMER_KV: "customer-kv-local" };
const FAMILIES = ["customer_", "email_to_customer_"];
const { values: opt } = parseArgs({
  options: {
    keys: { type: "string", default: "100000" },
    "out-dir": { type: "string", default: join(ROOT, "target/bench") },
    modes: { type: "string", default: "cron,queue" },
  },
});
const OUT = resolve(opt["out-dir"]);
const KEYS = Number(opt.keys);
const MODES = opt.modes.split(",");
// As wrangler.toml's commented queue sections declare them.
const QUEUE = { maxBatchSize: 8, maxRetries: 5 };
// fanout::tally::DEFAULT_MAX_IN_FLIGHT
const DEFAULT_MAX_IN_FLIGHT = 500;
const LIMIT_MS = Number(process.env.BENCH_FANOUT_LIMIT_S ?? 3000) * 1000;

const log = (...args) => console.error("[bench fanout]", ...args);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : 0;
};

/** Writes entries (POST [{key, value, expiration?, metadata?}]) and compares the stores. */
const HELPER_SCRIPT = `
function same(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
export default { async fetch(request, env) {
  const url = new URL(request.url);
  if (url.pathname === "/seed") {
    const items = await request.json();
    await Promise.all(items.map((e) => {
      const options = {};
      if (e.expiration) options.expiration = e.expiration;
      if (e.metadata) options.metadata = e.metadata;
      return env.OTP_AUTH_KV.put(e.key, e.value, options);
    }));
    return new Response(String(items.length));
  }
  if (url.pathname === "/list") {
    // Every page of the old store, one after another, as the planner lists them.
    let cursor, pages = 0;
    const t0 = Date.now();
    for (;;) {
      const page = await env.OTP_AUTH_KV.list({ cursor });
      pages += 1;
      if (page.list_complete) break;
      cursor = page.cursor;
    }
    return Response.json({ pages, ms: Date.now() - t0 });
  }
  // One page of a family in each store, compared name by name in key order.
  const { prefix, oldCursor, newCursor } = await request.json();
  const [o, n] = await Promise.all([
    env.OTP_AUTH_KV.list({ prefix, cursor: oldCursor || undefined }),
    env.CUSTOMER_KV.list({ prefix, cursor: newCursor || undefined }),
  ]);
  const differences = [];
  if (o.keys.length !== n.keys.length || o.list_complete !== n.list_complete) {
    differences.push("pages of different lengths: " + o.keys.length + " old, " + n.keys.length + " new");
  }
  const pairs = o.keys.map((k, i) => [k, n.keys[i]]);
  await Promise.all(pairs.map(async ([ok, nk]) => {
    if (!nk || ok.name !== nk.name) { differences.push("key order differs at " + ok.name.length + "-character key"); return; }
    if ((ok.expiration ?? null) !== (nk.expiration ?? null)) differences.push("expiration");
    const [ov, nv] = await Promise.all([
      env.OTP_AUTH_KV.getWithMetadata(ok.name, { type: "arrayBuffer" }),
      env.CUSTOMER_KV.getWithMetadata(nk.name, { type: "arrayBuffer" }),
    ]);
    if (!ov.value || !nv.value || !same(ov.value, nv.value)) differences.push("bytes");
    if (JSON.stringify(ov.metadata ?? null) !== JSON.stringify(nv.metadata ?? null)) differences.push("metadata");
  }));
  return Response.json({
    checked: o.keys.length,
    differences,
    complete: o.list_complete,
    oldCursor: o.cursor, newCursor: n.cursor,
  });
} };`;

async function run(mode, entries) {
  let stdout = "";
  const secret = randomBytes(24).toString("hex");
  const queue = mode === "queue";
  const mf = new Miniflare({
    workers: [
      {
        name: "product",
        modules: true,
        scriptPath: SHIM,
        modulesRules: [
          { type: "ESModule", include: ["**/*.js"] },
          { type: "CompiledWasm", include: ["**/*.wasm"] },
        ],
        compatibilityDate: "2025-01-01",
        kvNamespaces: NAMESPACES,
        durableObjects: { COORDINATOR: "Coordinator", CUSTOMER_WRITER: "CustomerWriter", EMAIL_OWNER: "EmailOwner" },
        ...(queue
          ? {
              queueProducers: { BACKFILL_QUEUE: "customer-backfill" },
              queueConsumers: {
                "customer-backfill": { ...QUEUE, maxBatchTimeout: 1, deadLetterQueue: "customer-backfill-dlq" },
                "customer-backfill-dlq": { maxBatchSize: 100, maxBatchTimeout: 1 },
              },
            }
          : {}),
        bindings: {
          JWT_SECRET: secret,
          DEFAULT_PHASE: "3",
          PHASE_CACHE_SECONDS: "0",
          PHASE_SETTLE_MARGIN_SECONDS: "0",
          // Local KV is strongly consistent: no window to wait out.
          KV_CONSISTENCY_WINDOW_SECONDS: "0",
        },
      },
      { name: "helper", modules: true, script: HELPER_SCRIPT, compatibilityDate: "2025-01-01", kvNamespaces: NAMESPACES },
    ],
    handleRuntimeStdio(stdoutStream, stderrStream) {
      stdoutStream.on("data", (chunk) => (stdout += chunk));
      stderrStream.on("data", () => {});
    },
  });
  try {
    const helper = await mf.getWorker("helper");
    const product = await mf.getWorker("product");
    const t0 = Date.now();
    for (let i = 0; i < entries.length; i += 1000) {
      const res = await helper.fetch("http://localhost/seed", { method: "POST", body: JSON.stringify(entries.slice(i, i + 1000)) });
      if (res.status !== 200) throw new Error(`seeding failed: ${res.status} ${await res.text()}`);
    }
    log(`${mode}: seeded ${entries.length} keys in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const token = mintToken({ secret, sub: "bench-admin", role: "admin" });
    const admin = async (method, path, body) => {
      const res = await product.fetch(`http://localhost${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return JSON.parse(text);
    };

    const started = performance.now();
    const crons = [];
    const fire = async () => {
      const t = performance.now();
      const fired = await product.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
      if (fired.outcome !== "ok") throw new Error(`cron: ${fired.outcome}`);
      crons.push(performance.now() - t);
    };
    let progress;
    if (queue) {
      let lastCron = 0;
      let idlePolls = 0;
      for (;;) {
        if (performance.now() - started > LIMIT_MS) throw new Error(`${mode}: not complete in ${LIMIT_MS / 1000} s`);
        // As in production, the cron plans within a minute when the consumers' nudges
        // have nothing to send; here it is fired as soon as nothing is in flight.
        if (crons.length === 0 || idlePolls >= 2 || performance.now() - lastCron > 60_000) {
          await fire();
          lastCron = performance.now();
          idlePolls = 0;
        }
        await sleep(250);
        progress = (await admin("GET", "/admin/migrate/status")).backfill;
        if (progress.complete) break;
        idlePolls = progress.fanout && progress.fanout.inFlight === 0 ? idlePolls + 1 : 0;
      }
    } else {
      for (;;) {
        if (performance.now() - started > LIMIT_MS) throw new Error(`${mode}: not complete in ${LIMIT_MS / 1000} s`);
        await fire();
        progress = (await admin("GET", "/admin/migrate/status")).backfill;
        if (progress.complete) break;
      }
    }
    const wallMs = performance.now() - started;
    await sleep(500); // the last log lines
    const lines = stdout.split("\n");
    // The worker's log lines are JSON objects: {"event":"cron","report":…} per cron run,
    // {"event":"queue","consumed":…,"durationMs":…} per consumer invocation.
    const events = lines
      .filter((l) => l.includes('"event":'))
      .map((l) => {
        try {
          return JSON.parse(l.slice(l.indexOf("{")));
        } catch {
          return null;
        }
      })
      .filter(Boolean);
    const cronReports = events.filter((e) => e.event === "cron" && e.report).map((e) => e.report);
    const consumerReports = events
      .filter((e) => e.event === "queue" && e.consumed)
      .map((e) => ({ ms: e.durationMs, ...e.consumed }));
    log(`${mode}: complete in ${(wallMs / 1000).toFixed(1)} s, ${crons.length} cron runs, ${consumerReports.length} consumer invocations`);

    // The product's own full verification, then the independent comparison.
    const v0 = performance.now();
    let verification;
    let verifyCalls = 0;
    // Fanned out, a call walks the listings and consumers compare the values: the calls
    // wait a little for them, as the CLI does.
    const pace = () => (mode === "queue" ? sleep(250) : Promise.resolve());
    for (;;) {
      verification = await admin("POST", "/admin/migrate/verify", { mode: "full", restart: verifyCalls === 0 });
      verifyCalls += 1;
      if (verification.complete || verifyCalls >= 2000) break;
      await pace();
    }
    const verifyMs = performance.now() - v0;
    // The email audit over the migrated store, its two passes to the end.
    const a0 = performance.now();
    let audit;
    let auditCalls = 0;
    for (;;) {
      audit = await admin("POST", "/admin/migrate/emails", { restart: auditCalls === 0 });
      auditCalls += 1;
      if (audit.complete || auditCalls >= 2000) break;
      await pace();
    }
    const auditMs = performance.now() - a0;
    let compared = 0;
    const differences = [];
    for (const prefix of FAMILIES) {
      let cursors = {};
      for (;;) {
        const res = await helper.fetch("http://localhost/compare", { method: "POST", body: JSON.stringify({ prefix, ...cursors }) });
        const page = await res.json();
        compared += page.checked;
        differences.push(...page.differences);
        if (page.complete) break;
        cursors = { oldCursor: page.oldCursor, newCursor: page.newCursor };
      }
    }
    const listing = await (await helper.fetch("http://localhost/list")).json();
    log(`${mode}: verification ${verification.complete ? "complete" : "incomplete"} in ${verifyCalls} calls; compared ${compared} keys, ${differences.length} differences`);
    return {
      mode,
      keys: entries.length,
      wallMs,
      counts: progress.counts,
      passes: progress.pass,
      fanout: progress.fanout,
      crons: cronReports.map((r) => ({ operations: r.operations, copied: r.backfill?.counts?.copied ?? 0 })),
      cronMs: crons,
      consumers: consumerReports,
      verification: {
        calls: verifyCalls,
        ms: verifyMs,
        complete: verification.complete,
        missing: verification.missing?.count,
        mismatched: verification.mismatched?.count,
        extra: verification.extra?.count,
      },
      audit: {
        calls: auditCalls,
        ms: auditMs,
        complete: audit.complete,
        checked: (audit.recordsScanned ?? 0) + (audit.mappingsScanned ?? 0),
        repaired: (audit.derived ?? 0) + (audit.repointed ?? 0) + (audit.rekeyed ?? 0),
        issues: (audit.conflicts ?? 0) + (audit.orphans ?? 0),
        chunks: audit.fanout ? `${audit.fanout.done} of ${audit.fanout.queued}` : "–",
      },
      compared,
      differences,
      listing,
    };
  } finally {
    await mf.dispose();
  }
}

function summary(r) {
  const cronOps = r.crons.reduce((a, c) => a + c.operations, 0);
  const consumerOps = r.consumers.reduce((a, c) => a + c.operations, 0);
  const migrated = r.counts.copied;
  return {
    invocations: r.crons.length + r.consumers.length,
    crons: r.crons.length,
    consumers: r.consumers.length,
    maxCronOps: Math.max(0, ...r.crons.map((c) => c.operations)),
    maxConsumerOps: Math.max(0, ...r.consumers.map((c) => c.operations)),
    medianConsumerOps: median(r.consumers.map((c) => c.operations)),
    operations: cronOps + consumerOps,
    migrated,
    opsPerRecord: (cronOps + consumerOps) / Math.max(1, migrated),
    writesPerRecord: r.consumers.reduce((a, c) => a + c.written, 0) / Math.max(1, migrated),
    recordsPerSecond: migrated / (r.wallMs / 1000),
    retried: r.consumers.reduce((a, c) => a + c.retried, 0),
    stale: r.consumers.reduce((a, c) => a + c.stale, 0),
  };
}

// Published limits and list prices (looked up 2026-12-01):
//   https://developers.cloudflare.com/kv/platform/limits/ and /pricing/
//   https://developers.cloudflare.com/queues/platform/limits/ and /pricing/
//   https://developers.cloudflare.com/workers/platform/pricing/
//   https://developers.cloudflare.com/durable-objects/reference/faq/ (work of one object)
const PLATFORM = {
  listPage: 1000, // keys per KV list
  consumers: 250, // concurrent consumer invocations of one queue (max_concurrency)
  messagesPerSecond: 5000, // per queue
  objectRequestsPerSecond: 1000, // one Durable Object's soft limit (the coordinator keeps the tally)
  kvReadPerM: 0.5, // US$ per million keys read (a bulk read is billed per key)
  kvWritePerM: 5.0, // per million writes (lists cost the same)
  queueOpPerM: 0.4, // per million queue operations (64 KB each; a delivered message costs 3)
  requestPerM: 0.3, // per million Workers invocations (consumers included)
};

/** Time and bill for big stores, from the measured runs and the published limits. */
function paper({ chunkS, listPageS, writesPerRecord, cronMinutesPerKey }) {
  // The window (maxInFlight, 500 chunks by default) caps the consumers at work at once.
  const consumers = Math.min(PLATFORM.consumers, DEFAULT_MAX_IN_FLIGHT / QUEUE.maxBatchSize);
  return [1e6, 1e7, 1e8].map((keys) => {
    // Two passes (§5): the second re-reads every chunk and writes only what changed.
    const deliveries = 2 * Math.ceil(keys / 100);
    const invocations = deliveries / QUEUE.maxBatchSize;
    const byConsumers = (deliveries * chunkS) / consumers;
    const byQueue = deliveries / PLATFORM.messagesPerSecond;
    // Every batch asks the one coordinator once per pass (Admit) and reports its chunks
    // in one request (DoneMany).
    const byCoordinator = (2 * invocations) / PLATFORM.objectRequestsPerSecond;
    const pages = (2 * keys) / PLATFORM.listPage;
    // The planner lists one page after another: at the local speed, and at an assumed
    // 100 ms a page (the platform publishes no figure).
    const byListing = pages * listPageS;
    const byListingAt100 = pages * 0.1;
    const seconds = Math.max(byConsumers, byQueue, byCoordinator, byListing);
    const worst = Math.max(byConsumers, byQueue, byCoordinator, byListingAt100);
    const bound = (t) =>
      t === byConsumers ? "consumers" : t === byQueue ? "queue throughput" : t === byCoordinator ? "coordinator" : "listing";
    const keysRead = keys * 5; // pass 1: source, target, re-read; pass 2: source, target
    return {
      keys,
      consumers,
      seconds,
      worst,
      bound: bound(seconds),
      worstBound: bound(worst),
      byConsumers,
      byQueue,
      byCoordinator,
      byListing,
      byListingAt100,
      kv: ((keys * writesPerRecord + pages) * PLATFORM.kvWritePerM + keysRead * PLATFORM.kvReadPerM) / 1e6,
      queueBill: (deliveries * 3 * PLATFORM.queueOpPerM) / 1e6,
      requests: (invocations * PLATFORM.requestPerM) / 1e6,
      cronDays: (keys * cronMinutesPerKey) / 60 / 24,
    };
  });
}

function fmtDuration(s) {
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const entries = generateLegacyData({ customers: Math.floor(KEYS / 2) - 8, seed: 7 });
  const results = {};
  for (const mode of MODES) results[mode] = await run(mode, entries);
  writeFileSync(join(OUT, "fanout.json"), JSON.stringify(results, null, 1));

  const out = [];
  const md = (line = "") => out.push(line);
  md("## 7. The backfill fanned out on a queue, against the cron");
  md();
  md(`The built worker in local workerd (Miniflare), ${entries.length} synthetic legacy keys (\`scripts/legacy-data.mjs\`: customers with their mappings plus the messy cases) in \`OTP_AUTH_KV\`, phase 3, backfilled twice in this run from the same seed: **cron**, no queue binding, the scheduled event fired back to back until the backfill reports complete; **queue**, \`BACKFILL_QUEUE\` bound as \`wrangler.toml\`'s queue sections declare it (batches of ${QUEUE.maxBatchSize} chunks, ${QUEUE.maxRetries} retries, a dead-letter queue), the cron fired once to plan and again only when nothing was in flight (the consumers' nudges plan the rest). Operations are the worker's own count for each invocation (\`operations\` in its \`cron:\` and \`queue:\` log lines; a bulk read of up to 100 keys is one, as the platform counts them against the cap). Local KV is strongly consistent, so the second pass follows at once.`);
  md();
  md("| | invocations (cron + consumer) | max KV ops in one invocation (cap 1000) | KV ops per migrated record | writes per migrated record | migrated | passes | wall time | records / s |");
  md("|---|---|---|---|---|---|---|---|---|");
  const s = {};
  for (const mode of MODES) {
    const r = results[mode];
    s[mode] = summary(r);
    const x = s[mode];
    const maxOps = mode === "queue" ? `${x.maxConsumerOps} consumer (median ${x.medianConsumerOps}), ${x.maxCronOps} cron` : `${x.maxCronOps}`;
    md(`| **${mode}** | ${x.invocations} (${x.crons} + ${x.consumers}) | ${maxOps} | ${x.opsPerRecord.toFixed(3)} | ${mode === "queue" ? x.writesPerRecord.toFixed(3) : "–"} | ${x.migrated} | ${r.passes} | ${fmtDuration(r.wallMs / 1000)} | ${x.recordsPerSecond.toFixed(0)} |`);
  }
  if (s.cron && s.queue) {
    md(`| **queue / cron** | | | ${(s.queue.opsPerRecord / s.cron.opsPerRecord).toFixed(2)} | | | | ${(results.queue.wallMs / results.cron.wallMs).toFixed(2)} | ${(s.queue.recordsPerSecond / s.cron.recordsPerSecond).toFixed(2)} |`);
  }
  md();
  md("Every key checked afterwards, in both runs: the product's full verification (`POST /admin/migrate/verify {\"mode\":\"full\"}`, called until complete), then a helper worker comparing the two namespaces page by page, name by name (bytes, metadata, expiration).");
  md();
  md("| | verification calls | missing / mismatched / extra | verification wall time | keys compared independently | differences |");
  md("|---|---|---|---|---|---|");
  for (const mode of MODES) {
    const r = results[mode];
    const v = r.verification;
    md(`| ${mode} | ${v.calls} (${v.complete ? "complete" : "incomplete"}) | ${v.missing} / ${v.mismatched} / ${v.extra} | ${fmtDuration(v.ms / 1000)} | ${r.compared} | ${r.differences.length} |`);
  }
  md();
  md("Then the email audit (`POST /admin/migrate/emails`, called until complete): in the cron run each call checks records and mappings itself; in the queue run each call lists and consumers check chunks of 20 (docs/design.md §13, \"Email audit fanned out\").");
  md();
  md("| | audit calls | audit wall time | records and mappings checked | repaired | conflicts and orphans | chunks |");
  md("|---|---|---|---|---|---|---|");
  for (const mode of MODES) {
    const a = results[mode].audit;
    md(`| ${mode} | ${a.calls} (${a.complete ? "complete" : "incomplete"}) | ${fmtDuration(a.ms / 1000)} | ${a.checked} | ${a.repaired} | ${a.issues} | ${a.chunks} |`);
  }
  md();
  if (s.queue) {
    const x = s.queue;
    md(`In the queue run: ${x.retried} deliveries retried, ${x.stale} stale chunks dropped; the tally's chunks: ${JSON.stringify(results.queue.fanout ?? {})}.`);
    md();
  }
  const ok = MODES.every((m) => {
    const v = results[m].verification;
    return v.complete && v.missing + v.mismatched + v.extra === 0 && results[m].differences.length === 0 && results[m].compared >= entries.length - 10;
  });
  if (s.queue && s.cron) {
    const q = results.queue;
    const chunkS = q.consumers.reduce((a, c) => a + c.ms, 0) / 1000 / Math.max(1, q.consumers.reduce((a, c) => a + c.messages, 0));
    const listPageS = q.listing.ms / 1000 / q.listing.pages;
    const cronMinutesPerKey = results.cron.crons.length / results.cron.keys; // one run a minute
    const rows = paper({ chunkS, listPageS, writesPerRecord: s.queue.writesPerRecord, cronMinutesPerKey });
    const consumers = rows[0].consumers;
    md(`**On paper, in production.** From the runs above and the platform's published limits: consumers scale out to ${PLATFORM.consumers} concurrent invocations, a queue takes ${PLATFORM.messagesPerSecond.toLocaleString("en-US")} messages a second, one Durable Object (the coordinator, which every batch asks once per pass and reports its chunks to in one request) about ${PLATFORM.objectRequestsPerSecond.toLocaleString("en-US")} requests a second, \`list\` returns ${PLATFORM.listPage.toLocaleString("en-US")} keys a page. Each chunk of 100 keys is delivered twice (two passes, §5), ${QUEUE.maxBatchSize} to a consumer invocation; the default window of ${DEFAULT_MAX_IN_FLIGHT} chunks in flight keeps ${consumers} consumers at work at once (\`backfill/throttle\` with \`maxInFlight\` ${PLATFORM.consumers * QUEUE.maxBatchSize} lets all ${PLATFORM.consumers} work). A chunk costs a consumer ${(chunkS * 1000).toFixed(0)} ms, the mean measured here (the worker's own clock from a batch's arrival to its last I/O, over every delivery of both passes; local KV is SQLite on a shared 2-core machine). The planner lists the old store one page after another: ${(listPageS * 1000).toFixed(1)} ms a page here, where local KV answers from memory and disk; the platform publishes no list latency, so the table also shows an assumed 100 ms a page. The cron alone: ${results.cron.crons.length} runs for ${results.cron.keys} keys here, one run a minute in production. Bill at list price beyond the Workers Paid inclusions: KV $0.50 per million keys read (a bulk read is billed per key: three reads per key in the first pass, two in the second), $5 per million writes and lists; Queues $0.40 per million operations (3 per delivered message); Workers $0.30 per million invocations.`);
    md();
    md("| legacy keys | cron alone | queue: consumers | queue throughput | coordinator | listing (local speed / 100 ms a page) | **queue: time** (local list speed / 100 ms a page) | bound by | KV bill | Queues bill | invocations bill |");
    md("|---|---|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) {
      md(`| ${r.keys.toLocaleString("en-US")} | ${r.cronDays.toFixed(1)} days | ${fmtDuration(r.byConsumers)} | ${fmtDuration(r.byQueue)} | ${fmtDuration(r.byCoordinator)} | ${fmtDuration(r.byListing)} / ${fmtDuration(r.byListingAt100)} | **${fmtDuration(r.seconds)} / ${fmtDuration(r.worst)}** | ${r.bound} / ${r.worstBound} | $${r.kv.toFixed(2)} | $${r.queueBill.toFixed(2)} | $${r.requests.toFixed(2)} |`);
    }
    md();
  }
  writeFileSync(join(OUT, "fanout.md"), out.join("\n") + "\n");
  log(`wrote ${join(OUT, "fanout.md")}`);
  if (!ok) {
    log("a run did not verify clean");
    process.exit(1);
  }
}

await main();
