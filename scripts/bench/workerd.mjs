#!/usr/bin/env node
// The workerd half of the benchmark (scripts/bench/run.sh calls it; see its header):
//   - backfill cost in workerd: the built worker in Miniflare over synthetic legacy keys,
//     the cron fired until the backfill is done, each run's report collected;
//   - start-up: time from spawning `wrangler dev` to the first answered request, for the
//     product's worker and the minimal worker, alternating;
//   - load: `wrk` against the workers under `wrangler dev`, in the same run, alternating
//     round by round (read hit, fallback read, update of many customers, update of one
//     customer, in phase 3), with ratios: this build ("after"), the minimal worker, and
//     with --before-dir the build of another commit ("before", e.g. the one before the
//     customers' and emails' Durable Objects);
//   - unloaded latency: sequential requests (read hit, update, create with an email) to
//     each product build, from which the time a write spends in its objects is estimated.
// Writes Markdown fragments (backfill.md, load.md, size.md) and results.json to --out-dir.
// Loads only 127.0.0.1; every step is time-bounded (BENCH_TIME_LIMIT_S, default 1800).
//
// Options: --out-dir DIR  --duration S (per wrk run, 10)  --rounds N (3)  --connections C (8)
//          --backfill-keys N (10000; 0 skips)  --starts N (3)
//          --before-dir DIR (a built worktree of the commit to compare; its wrangler.toml
//          decides which Durable Object bindings it gets)  --sequential N (100)
//          --warm-up S (20: seconds of reads, and half as many of updates, per worker)

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";
import { mintToken } from "../dev-token.mjs";
import { generateLegacyData } from "../legacy-data.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BENCH = join(ROOT, "scripts/bench");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");
const SHIM = join(ROOT, "build/worker/shim.mjs");
const NAMESPACES = { OTP_AUTH_KV: "otp-auth-kv-local", CUSTOMER_KV: "customer-kv-local" };

const { values: opt } = parseArgs({
  options: {
    "out-dir": { type: "string", default: join(ROOT, "target/bench") },
    duration: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "8" },
    "backfill-keys": { type: "string", default: "10000" },
    starts: { type: "string", default: "3" },
    "before-dir": { type: "string" },
    sequential: { type: "string", default: "100" },
    "warm-up": { type: "string", default: "20" },
  },
});
const BEFORE_DIR = opt["before-dir"] ? resolve(opt["before-dir"]) : undefined;
const SEQUENTIAL = Number(opt.sequential);
const DURATION = Number(opt.duration);
const ROUNDS = Number(opt.rounds);
const CONNECTIONS = Number(opt.connections);
const STARTS = Number(opt.starts);
const WARM_UP_S = Number(opt["warm-up"]);
const READ_POOL = 1000; // customers in both stores: read hits and updates cycle through them
// Customers only in the old store, per round and worker: each fallback read takes a fresh
// one (the read-repair copies it, so a second read would be a hit).
const FALLBACK_PER_ROUND = Number(process.env.BENCH_FALLBACK_PER_ROUND ?? 5000);
const OUT = resolve(opt["out-dir"]);
const STATE = join(OUT, "state");

const log = (...args) => console.error("[bench]", ...args);
const fragments = { backfill: [], load: [], size: [] };
let out = fragments.backfill;
const md = (line = "") => out.push(line);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const percentile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
/** The workers in round `i`'s order: rotated by one each round. */
const rotate = (xs, i) => xs.map((_, j) => xs[(i + j) % xs.length]);

/** The short commit of --before-dir. */
function beforeCommit() {
  return execFileSync("git", ["-C", BEFORE_DIR, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
}

/**
 * The bench worker's configuration for the build in --before-dir: this build's
 * scripts/bench/worker/wrangler.toml without its Durable Object sections, serving that
 * build's shim, with the Durable Object bindings and migrations of that commit's own
 * wrangler.toml (before the customers' objects: COORDINATOR only).
 */
function beforeConfig() {
  const sections = (text) => text.split(/^(?=\[)/m);
  const isObjects = (section) => /^\[\[(durable_objects\.bindings|migrations)\]\]/.test(section);
  const mine = sections(readFileSync(join(BENCH, "worker/wrangler.toml"), "utf8")).filter((x) => !isObjects(x));
  const theirs = sections(readFileSync(join(BEFORE_DIR, "wrangler.toml"), "utf8")).filter(isObjects);
  const text = [...mine, ...theirs]
    .join("")
    .replace(/^# The coordinator and the objects[^\n]*\n#[^\n]*\n/m, "")
    .replace(/^name = .*$/m, 'name = "customer-kv-bench-before"')
    .replace(/^main = .*$/m, `main = ${JSON.stringify(join(BEFORE_DIR, "build/worker/shim.mjs"))}`);
  mkdirSync(OUT, { recursive: true });
  const file = join(OUT, "before-wrangler.toml");
  writeFileSync(file, text);
  return file;
}

// ---------------------------------------------------------------- seeding

/** A worker that writes many KV entries inside workerd: POST [{ns, key, value, ...}]. */
const SEED_SCRIPT = `export default { async fetch(request, env) {
  const items = await request.json();
  await Promise.all(items.map((e) => {
    const options = {};
    if (e.expiration) options.expiration = e.expiration;
    if (e.metadata) options.metadata = e.metadata;
    return env[e.ns].put(e.key, e.value, options);
  }));
  return new Response(String(items.length));
} };`;

async function seedThrough(fetchSeed, entries) {
  for (let i = 0; i < entries.length; i += 500) {
    const res = await fetchSeed(JSON.stringify(entries.slice(i, i + 500)));
    if (res.status !== 200) throw new Error(`seeding failed: ${res.status} ${await res.text()}`);
  }
}

/** Seeds a wrangler --persist-to state folder, through Miniflare on the same files. */
async function seedState(dir, entries) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const mf = new Miniflare({
    modules: true,
    script: SEED_SCRIPT,
    compatibilityDate: "2025-01-01",
    kvNamespaces: NAMESPACES,
    kvPersist: join(dir, "v3/kv"),
  });
  try {
    await seedThrough(
      (body) => mf.dispatchFetch("http://localhost/", { method: "POST", body }),
      entries,
    );
  } finally {
    await mf.dispose();
  }
}

function loadData(customers) {
  // Customers 1..READ_POOL in both stores, the rest only in the old store.
  const legacy = generateLegacyData({ customers, seed: 1 }).filter((e) => /^customer_cust_\d+$/.test(e.key));
  const entries = [];
  for (const e of legacy) {
    const n = Number(e.key.slice("customer_cust_".length));
    entries.push({ ns: "OTP_AUTH_KV", key: e.key, value: e.value });
    if (n <= READ_POOL) entries.push({ ns: "CUSTOMER_KV", key: e.key, value: e.value });
  }
  return entries;
}

// ---------------------------------------------------------------- backfill in workerd

async function backfillInWorkerd(keys) {
  const customers = Math.floor(keys / 2);
  const entries = generateLegacyData({ customers, seed: 1 }).map((e) => ({ ns: "OTP_AUTH_KV", ...e }));
  let stdout = "";
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
        durableObjects: {
          COORDINATOR: "Coordinator",
          CUSTOMER_WRITER: "CustomerWriter",
          EMAIL_OWNER: "EmailOwner",
        },
        bindings: {
          JWT_SECRET: randomBytes(24).toString("hex"),
          DEFAULT_PHASE: "3",
          PHASE_CACHE_SECONDS: "0",
          PHASE_SETTLE_MARGIN_SECONDS: "0",
          // Local KV is strongly consistent: no window to wait out.
          KV_CONSISTENCY_WINDOW_SECONDS: "0",
        },
      },
      { name: "seed", modules: true, script: SEED_SCRIPT, compatibilityDate: "2025-01-01", kvNamespaces: NAMESPACES },
    ],
    handleRuntimeStdio(stdoutStream, stderrStream) {
      stdoutStream.on("data", (chunk) => (stdout += chunk));
      stderrStream.on("data", () => {});
    },
  });
  try {
    const seeder = await mf.getWorker("seed");
    const t0 = Date.now();
    await seedThrough((body) => seeder.fetch("http://localhost/", { method: "POST", body }), entries);
    log(`backfill: seeded ${entries.length} keys in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const product = await mf.getWorker("product");
    const runs = [];
    for (let i = 0; i < 1000; i++) {
      const before = stdout.length;
      const start = performance.now();
      await product.scheduled({ cron: "* * * * *" });
      const ms = performance.now() - start;
      let report;
      for (let wait = 0; wait < 100 && !report; wait++) {
        // The worker logs one JSON object per cron run: {"event":"cron","report":{…}}.
        const line = stdout.slice(before).split("\n").find((l) => l.includes('"event":"cron"'));
        if (line) report = JSON.parse(line.slice(line.indexOf("{"))).report;
        else await sleep(20);
      }
      if (!report) throw new Error(`no cron report in the worker's output: ${stdout.slice(before, before + 500)}`);
      if (!report.backfill || !report.backfill.ran) break;
      runs.push({ copied: report.backfill.counts.copied, operations: report.operations, ms });
      if (report.backfill.complete) break;
    }
    return { keys: entries.length, runs };
  } finally {
    await mf.dispose();
  }
}

// ---------------------------------------------------------------- wrangler dev servers

function startServer(name, config, state, port, inspectorPort, vars = []) {
  const args = [
    "dev", "--config", config, "--persist-to", state, "--ip", "127.0.0.1", "--port", String(port),
    "--inspector-port", String(inspectorPort), "--show-interactive-dev-session=false", "--log-level", "error",
  ];
  for (const v of vars) args.push("--var", v);
  const started = performance.now();
  const child = spawn(WRANGLER, args, { cwd: ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (c) => (output = (output + c).slice(-20_000));
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const server = { name, child, port, started, output: () => output, url: `http://127.0.0.1:${port}` };
  running.add(server);
  return server;
}

async function firstAnswer(server, timeoutMs = 60_000) {
  while (performance.now() - server.started < timeoutMs) {
    try {
      const res = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(2000) });
      await res.text();
      if (res.status === 200) return performance.now() - server.started;
    } catch {
      // not listening yet
    }
    if (server.child.exitCode !== null) break;
    await sleep(20);
  }
  throw new Error(`${server.name} did not answer: ${server.output().slice(-2000)}`);
}

const running = new Set();
async function stopServer(server) {
  if (!running.delete(server)) return;
  try {
    process.kill(-server.child.pid, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 100 && server.child.exitCode === null && server.child.signalCode === null; i++) await sleep(50);
  try {
    process.kill(-server.child.pid, "SIGKILL");
  } catch {
    // already gone
  }
}
function stopAllNow() {
  for (const s of running) {
    try {
      process.kill(-s.child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
process.on("exit", stopAllNow);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

/** The process and all its descendants (wrangler, its workerd), from /proc. */
function processTree(pid) {
  const pids = [pid];
  for (let i = 0; i < pids.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${pids[i]}/task`)) {
        const children = readFileSync(`/proc/${pids[i]}/task/${task}/children`, "utf8").trim();
        if (children) pids.push(...children.split(/\s+/).map(Number));
      }
    } catch {
      // gone
    }
  }
  return pids;
}

/** CPU seconds (user + system) used so far by the processes. */
function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // gone
    }
  }
  return ticks / 100; // USER_HZ
}

/**
 * One wrk run, bounded in time. Asynchronous on purpose: while it runs, this process must
 * keep reading the dev servers' output, or a full pipe would stall them.
 */
function wrk(url, mode, token, first, count, duration, timeoutS = 5) {
  const args = [
    "-t1", `-c${CONNECTIONS}`, `-d${duration}s`, "--timeout", `${timeoutS}s`,
    "-s", join(BENCH, "wrk.lua"), url, "--", mode, token, String(first), String(count),
  ];
  return new Promise((resolvePromise, reject) => {
    const child = spawn("wrk", args, { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    child.stdout.on("data", (c) => (text += c));
    child.stderr.on("data", (c) => (text += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), (duration + timeoutS + 20) * 1000);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const line = text.split("\n").find((l) => l.startsWith("BENCH_JSON "));
      if (!line) return reject(new Error(`wrk ${mode} ${url} gave no result (exit ${code ?? signal}):\n${text}`));
      const r = JSON.parse(line.slice("BENCH_JSON ".length));
      r.rps = r.requests / (r.duration_us / 1e6);
      r.errors = r.connect + r.read + r.write + r.status + r.timeout;
      resolvePromise(r);
    });
  });
}

// ---------------------------------------------------------------- main

async function main() {
  const files = {
    wasm: join(ROOT, "build/index_bg.wasm"),
    glue: join(ROOT, "build/index.js"),
    minimal: join(BENCH, "minimal-worker/worker.mjs"),
    names: join(ROOT, "build/index_bg.names.txt"),
    rustWasm: join(BENCH, "minimal-rust/build/index_bg.wasm"),
    rustGlue: join(BENCH, "minimal-rust/build/index.js"),
  };
  const wasm = readFileSync(files.wasm);
  // The gzip command itself: the figures are `wc -c FILE` and `gzip -9 -c FILE | wc -c`.
  const gz = (file) => execFileSync("gzip", ["-9", "-c", file], { maxBuffer: 1 << 26 }).length;
  const sizes = Object.fromEntries(
    Object.entries(files).map(([name, file]) => [name, [readFileSync(file).length, gz(file)]]),
  );

  // 2. Backfill in workerd.
  const backfillKeys = Number(opt["backfill-keys"]);
  let backfill;
  if (backfillKeys > 0) {
    log(`backfill in workerd over ${backfillKeys} synthetic legacy keys`);
    backfill = await backfillInWorkerd(backfillKeys);
  }

  // Seeding every worker's local store identically.
  const secret = randomBytes(32).toString("hex");
  const token = mintToken({ secret, sub: "bench-service", role: "service", ttl: 6 * 3600 });
  const customers = READ_POOL + ROUNDS * FALLBACK_PER_ROUND;
  const entries = loadData(customers);
  // The products log at LOG_LEVEL=warn, as the minimal worker logs nothing: under
  // `wrangler dev` every console line crosses the inspector into wrangler's node process,
  // whose CPU the figures count, which the platform does not do. "product-info" is the
  // same build at the default LOG_LEVEL=info, on read hits only, to show that line's cost.
  // "minimal-object" is the minimal worker with its updates in a minimal Durable Object
  // (one at a time per customer): the least a worker that keeps concurrent writes can do.
  // "minimal-rust" (read hits) verifies the token and reads KV, built with the product's
  // toolchain: the floor of a Rust worker here.
  const workers = [
    { name: "product", label: "after (this build)", config: join(BENCH, "worker/wrangler.toml"), port: 8791, inspector: 9291, vars: [`JWT_SECRET:${secret}`, "LOG_LEVEL:warn"] },
    { name: "minimal", label: "minimal JS", config: join(BENCH, "minimal-worker/wrangler.toml"), port: 8792, inspector: 9292, vars: [] },
    { name: "product-info", label: "after, LOG_LEVEL=info", config: join(BENCH, "worker/wrangler.toml"), port: 8794, inspector: 9294, vars: [`JWT_SECRET:${secret}`, "LOG_LEVEL:info"], scenarios: ["read"] },
    { name: "minimal-object", label: "minimal JS + object", config: join(BENCH, "minimal-worker/wrangler.toml"), port: 8795, inspector: 9295, vars: ["VIA_OBJECT:1"], scenarios: ["update"] },
    { name: "minimal-rust", label: "minimal Rust", config: join(BENCH, "minimal-rust/wrangler.toml"), port: 8796, inspector: 9296, vars: [`JWT_SECRET:${secret}`], scenarios: ["read"] },
  ];
  if (BEFORE_DIR) {
    workers.push({ name: "before", label: `before (${beforeCommit()})`, config: beforeConfig(), port: 8793, inspector: 9293, vars: [`JWT_SECRET:${secret}`, "LOG_LEVEL:warn"] });
  }
  const runsScenario = (w, scenario) => !w.scenarios || w.scenarios.includes(scenario);
  const products = workers.filter((w) => w.name === "product" || w.name === "before");
  {
    // Seeded once, then copied: every worker starts from identical stores.
    const t0 = Date.now();
    await seedState(join(STATE, "seed"), entries);
    log(`seeded ${entries.length} keys in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    for (const w of workers) {
      w.state = join(STATE, w.name);
      rmSync(w.state, { recursive: true, force: true });
      cpSync(join(STATE, "seed"), w.state, { recursive: true });
    }
  }

  // 4. Start-up, alternating; the last start of each stays up for the load.
  for (const w of workers) w.starts = [];
  for (let i = 0; i < STARTS; i++) {
    for (const w of rotate(workers, i)) {
      const server = startServer(w.name, w.config, w.state, w.port, w.inspector, w.vars);
      w.starts.push(await firstAnswer(server));
      log(`${w.name}: first answer after ${w.starts.at(-1).toFixed(0)} ms`);
      if (i < STARTS - 1) await stopServer(server);
      else w.server = server;
    }
  }

  // Sanity: each product build answers the pool with the token, in phase 3, and writes.
  for (const w of workers.filter((w) => w.name.startsWith("product") || w.name === "before")) {
    const auth = { authorization: `Bearer ${token}` };
    const res = await fetch(`${w.server.url}/customer/cust_000001`, { headers: auth });
    if (res.status !== 200) throw new Error(`${w.name}: GET /customer/cust_000001 answered ${res.status} ${await res.text()}`);
    const health = await (await fetch(`${w.server.url}/health`)).json();
    if (health.phase !== 3) throw new Error(`${w.name} is in phase ${health.phase}, not 3`);
    const patch = await fetch(`${w.server.url}/customer/cust_000002`, { method: "PATCH", headers: { ...auth, "content-type": "application/json" }, body: '{"name":"Sanity"}' });
    if (patch.status !== 200) throw new Error(`${w.name}: PATCH /customer/cust_000002 answered ${patch.status} ${await patch.text()}`);
  }

  // 3. Load: warm-up, then rounds rotating which worker goes first.
  // Warm-up: V8 first runs wasm in its baseline tier and compiles the functions that run
  // often again, optimised, in the background; a module with large functions takes many
  // seconds of load to get there (a 3 s warm-up left both Rust workers at about two
  // thirds of their later speed for two rounds). Each worker gets the reads and updates
  // it will serve, so every round measures isolates that have long been serving.
  for (const w of workers) {
    if (runsScenario(w, "read")) await wrk(w.server.url, "read", token, 1, READ_POOL, WARM_UP_S);
    if (runsScenario(w, "update")) await wrk(w.server.url, "update", token, 1, READ_POOL, WARM_UP_S / 2);
  }
  const scenarios = ["read", "fallback", "update", "update-one"];
  const results = {}; // scenario -> worker -> [runs]
  for (let round = 0; round < ROUNDS; round++) {
    for (const scenario of scenarios) {
      for (const w of rotate(workers, round).filter((w) => runsScenario(w, scenario))) {
        const first = scenario === "fallback" ? READ_POOL + 1 + round * FALLBACK_PER_ROUND : 1;
        const count = scenario === "fallback" ? FALLBACK_PER_ROUND : READ_POOL;
        const pids = processTree(w.server.child.pid);
        const cpuBefore = cpuSeconds(pids);
        // One customer: the object answers one PATCH a second, so a request may queue
        // behind the other connections' for several seconds.
        const timeout = scenario === "update-one" ? 30 : 5;
        const r = await wrk(w.server.url, scenario, token, first, count, DURATION, timeout);
        r.cpu_ms_per_request = ((cpuSeconds(pids) - cpuBefore) * 1000) / Math.max(1, r.requests);
        if (scenario === "fallback" && r.requests > FALLBACK_PER_ROUND) {
          throw new Error(`fallback pool exhausted (${r.requests} requests): raise BENCH_FALLBACK_PER_ROUND`);
        }
        // Let the object's queue drain before the next worker's run.
        if (scenario === "update-one") await sleep(2000);
        ((results[scenario] ??= {})[w.name] ??= []).push(r);
        log(`round ${round + 1} ${scenario} ${w.name}: ${r.rps.toFixed(0)} req/s, p50 ${(r.p50_us / 1000).toFixed(2)} ms, p99 ${(r.p99_us / 1000).toFixed(2)} ms, CPU ${r.cpu_ms_per_request.toFixed(3)} ms/req, errors ${r.errors}`);
      }
    }
  }

  // Unloaded latency, one request at a time, rotating the product builds request by
  // request: read hit, update (distinct customers), create with a new email.
  const sequential = {}; // worker -> kind -> [ms]
  for (let i = 0; i < SEQUENTIAL; i++) {
    for (const w of rotate(products, i)) {
      const s = (sequential[w.name] ??= { read: [], update: [], create: [] });
      const auth = { authorization: `Bearer ${token}`, "content-type": "application/json" };
      const id = String(READ_POOL - i).padStart(6, "0");
      const timed = async (kind, path, init, expect) => {
        const t0 = performance.now();
        const res = await fetch(`${w.server.url}${path}`, { headers: auth, ...init });
        await res.text();
        if (res.status !== expect) throw new Error(`${w.name} ${kind} ${path}: ${res.status}`);
        s[kind].push(performance.now() - t0);
      };
      await timed("read", `/customer/cust_${id}`, {}, 200);
      await timed("update", `/customer/cust_${id}`, { method: "PATCH", body: JSON.stringify({ name: `Seq ${i}` }) }, 200);
      await timed("create", "/customer", { method: "POST", body: JSON.stringify({ customerId: `seq_${i}`, email: `seq${i}@bench.example.com`, name: "Seq" }) }, 201);
    }
  }
  // Concurrent PATCHes of one customer, each setting a field of its own: how many
  // answered 200, and how many of their fields the record holds afterwards.
  const merged = {}; // worker -> { ok, kept, slowestMs }
  for (const w of workers.filter((w) => runsScenario(w, "update"))) {
    const auth = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: CONNECTIONS }, async (_, i) => {
        const res = await fetch(`${w.server.url}/customer/cust_000003`, { method: "PATCH", headers: auth, body: JSON.stringify({ [`probe${i}`]: i }) });
        await res.text();
        return { status: res.status, ms: performance.now() - t0 };
      }),
    );
    const record = JSON.parse(await (await fetch(`${w.server.url}/customer/cust_000003`, { headers: auth })).text());
    const kept = Array.from({ length: CONNECTIONS }, (_, i) => record[`probe${i}`] === i).filter(Boolean).length;
    merged[w.name] = { ok: answers.filter((a) => a.status === 200).length, kept, slowestMs: Math.max(...answers.map((a) => a.ms)) };
    log(`${w.name}: ${CONNECTIONS} concurrent PATCHes, ${merged[w.name].ok} answered 200, ${kept} fields kept`);
  }
  for (const w of workers) await stopServer(w.server);

  // ------------------------------------------------------------ report
  if (backfill) {
    const { keys, runs } = backfill;
    const copied = runs.reduce((a, r) => a + r.copied, 0);
    const ops = runs.reduce((a, r) => a + r.operations, 0);
    const full = runs.slice(0, -1).map((r) => r.copied);
    md("### Backfill in workerd (one run)");
    md();
    md(`The built worker in workerd (Miniflare ${await miniflareVersion()}), ${keys} synthetic legacy keys from \`scripts/legacy-data.mjs\` (customers with their mappings plus the messy cases) in the local \`OTP_AUTH_KV\`, phase 3, the scheduled event fired until the backfill reports complete. Operations are the worker's own count for each invocation (\`operations\` in its cron report).`);
    md();
    md("| legacy keys | cron runs | migrated per full run (min / median) | max ops in one run (cap 1000) | KV ops per migrated record | wall time per run (median) |");
    md("|---|---|---|---|---|---|");
    md(`| ${keys} | ${runs.length} | ${full.length ? Math.min(...full) : "-"} / ${full.length ? median(full) : "-"} | ${Math.max(...runs.map((r) => r.operations))} | ${(ops / copied).toFixed(3)} (${copied} migrated) | ${median(runs.map((r) => r.ms)).toFixed(0)} ms |`);
    md();
  }

  out = fragments.load;
  const before = workers.find((w) => w.name === "before");
  md("## 3. Throughput and latency in workerd");
  md();
  md(`\`wrk -t1 -c${CONNECTIONS} -d${DURATION}s\` (\`scripts/bench/wrk.lua\`) against each worker under \`wrangler dev\` on 127.0.0.1, local KV (SQLite) and local Durable Objects, ${ROUNDS} rounds; in each round every scenario runs against every worker back to back, the order rotating round by round. Before the rounds each worker serves ${WARM_UP_S} s of read hits (and ${WARM_UP_S / 2} s of updates, if it takes them), so that V8 has optimised its code. Figures are medians over the rounds. The workers: **after** is this build, whose writes run in the customers' and emails' Durable Objects (bindings \`COORDINATOR\`, \`CUSTOMER_WRITER\`, \`EMAIL_OWNER\`)${before ? `; **before** is commit ${beforeCommit()}, the build before those objects (binding \`COORDINATOR\` only), built from its own worktree` : ""}; **minimal** (\`scripts/bench/minimal-worker/worker.mjs\`) makes only the KV operations of the product before the objects, in the same order, with no authentication, validation, error handling or Durable Object; **minimal JS + object** (updates only) is the same worker with each update made in a minimal Durable Object per customer that takes one update at a time (read, merge, write both stores): the least a worker can do that keeps concurrent writes, so *after / minimal + object* is the product's own cost on an update. **minimal Rust** (read hits only, \`scripts/bench/minimal-rust/\`) verifies the HS256 token and makes the one KV read, built with the product's toolchain (workers-rs, worker-build, the same wasm-bindgen): *after / minimal Rust* is the product's own cost on a read hit over what any Rust worker here pays. The products run in phase 3 with a service token, at \`LOG_LEVEL=warn\` (a successful request logs nothing, as the minimal worker): under \`wrangler dev\` every console line is carried over the inspector into wrangler's node process, whose CPU is counted here, which the platform does not do; **after, LOG_LEVEL=info** (read hits only) is the same build logging its one line per request, to show what that line costs here. CPU per request is the user and system CPU time of the dev server's processes (wrangler and its workerd, which also runs the local KV and the objects) during the run, divided by the requests. Read hits and updates cycle through ${READ_POOL} customers held by both stores; every fallback read asks for a customer only the old store holds (each is read once: its read-repair makes the next read a hit). **update, one customer**: every connection PATCHes the same customer.`);
  md();
  const ms = (us) => (us / 1000).toFixed(2);
  const labels = { read: "read hit", fallback: "fallback read", update: `update, ${READ_POOL} customers`, "update-one": "update, one customer" };
  const summary = {}; // scenario -> worker -> {rps, p50, p99, cpu, errors}
  for (const s of scenarios) {
    summary[s] = {};
    for (const w of workers.filter((w) => runsScenario(w, s))) {
      const runs = results[s][w.name];
      summary[s][w.name] = {
        rps: median(runs.map((r) => r.rps)),
        p50: median(runs.map((r) => r.p50_us)),
        p99: median(runs.map((r) => r.p99_us)),
        cpu: median(runs.map((r) => r.cpu_ms_per_request)),
        errors: runs.reduce((a, r) => a + r.errors, 0),
        requests: runs.reduce((a, r) => a + r.requests, 0),
        rpsByRound: runs.map((r) => r.rps),
      };
    }
  }
  const ratioColumns = [["product", "minimal", "after / minimal"], ["product-info", "minimal", "after at info / minimal"], ["product", "minimal-object", "after / minimal + object"], ["product", "minimal-rust", "after / minimal Rust"]];
  if (before) ratioColumns.push(["before", "minimal", "before / minimal"], ["product", "before", "after / before"]);
  // Each ratio pairs the two workers' runs of one round, which ran back to back: the
  // machine's load drifts between rounds more than between neighbouring runs.
  const pairedRatio = (a, b) => {
    const byRound = a.rpsByRound.map((x, i) => x / b.rpsByRound[i]).filter(Number.isFinite);
    const rounds = byRound.length > 1 ? ` (${byRound.map((r) => r.toFixed(2)).join(", ")})` : "";
    return `**${median(byRound).toFixed(2)}**${rounds}`;
  };
  md("Requests per second (median over the rounds) and their ratios. A ratio is the median of the round-by-round ratios (each round's, in brackets), each pairing two runs made back to back in one round:");
  md();
  md(`| scenario | ${workers.map((w) => w.label).join(" | ")} | ${ratioColumns.map((c) => `**${c[2]}**`).join(" | ")} |`);
  md(`|---|${workers.map(() => "---|").join("")}${ratioColumns.map(() => "---|").join("")}`);
  // A worker that did not run a scenario shows a dash, as does a ratio it is part of.
  const cell = (x, name, f) => (x[name] ? f(x[name]) : "–");
  const ratio = (x, [a, b], f) => (x[a] && x[b] ? f(x[a], x[b]) : "–");
  for (const s of scenarios) {
    const x = summary[s];
    md(`| ${labels[s]} | ${workers.map((w) => cell(x, w.name, (y) => y.rps.toFixed(s === "update-one" ? 1 : 0))).join(" | ")} | ${ratioColumns.map((c) => ratio(x, c, pairedRatio)).join(" | ")} |`);
  }
  md();
  md("Latency p50 / p99 (median over the rounds), their ratios, CPU per request and errors:");
  md();
  md(`| scenario | ${workers.map((w) => `${w.label} p50 / p99`).join(" | ")} | ${ratioColumns.map((c) => `${c[2]} p50 / p99`).join(" | ")} | CPU per request, ${workers.map((w) => w.name).join(" / ")} | errors |`);
  md(`|---|${workers.map(() => "---|").join("")}${ratioColumns.map(() => "---|").join("")}---|---|`);
  for (const s of scenarios) {
    const x = summary[s];
    md(`| ${labels[s]} | ${workers.map((w) => cell(x, w.name, (y) => `${ms(y.p50)} / ${ms(y.p99)} ms`)).join(" | ")} | ${ratioColumns.map((c) => ratio(x, c, (a, b) => `${(a.p50 / b.p50).toFixed(2)} / ${(a.p99 / b.p99).toFixed(2)}`)).join(" | ")} | ${workers.map((w) => cell(x, w.name, (y) => y.cpu.toFixed(3))).join(" / ")} ms | ${workers.map((w) => cell(x, w.name, (y) => y.errors)).join(" / ")} |`);
  }
  md();
  {
    const one = summary["update-one"];
    md(`**One customer.** After: ${one.product.rps.toFixed(1)} PATCH/s at p50 ${ms(one.product.p50)} ms — the customer's object takes one write a second (KV takes one write a second to a key; the object waits out the rest of the second, its lock held, so the PATCHes queue behind each other: each waits about a second for each one queued ahead of it; wrk counts only the PATCHes answered within the ${DURATION} s run). That pacing, not the product's speed, is what this row measures. ${before ? "Before and the minimal worker" : "The minimal worker"} answer many more PATCHes a second here only because local KV does not enforce the one write a second: in production KV answers 429 to most of them (the product before the objects answered 429 \`rate_limited\`), and concurrent read-merge-writes of one record keep only some of their fields, as the check below shows.`);
    md();
    md(`Concurrent PATCHes of one customer, once: ${CONNECTIONS} sent at once, each setting a field of its own, then the record read back.`);
    md();
    md("| worker | answered 200 | fields the record kept | last answer after |");
    md("|---|---|---|---|");
    for (const w of workers.filter((w) => merged[w.name])) md(`| ${w.label} | ${merged[w.name].ok} of ${CONNECTIONS} | ${merged[w.name].kept} of ${CONNECTIONS} | ${(merged[w.name].slowestMs / 1000).toFixed(1)} s |`);
    md();
  }

  if (products.every((w) => sequential[w.name])) {
    md("### Unloaded latency (one request at a time)");
    md();
    md(`${SEQUENTIAL} requests of each kind, one at a time, the product builds alternating request by request: a read hit, a PATCH of a different customer each time (no pacing), a create with a new email. Median / p90 in milliseconds, measured by the driver (Node \`fetch\`).`);
    md();
    md(`| request | ${products.map((w) => w.label).join(" | ")}${before ? " | after − before (median)" : ""} |`);
    md(`|---|${products.map(() => "---|").join("")}${before ? "---|" : ""}`);
    for (const kind of ["read", "update", "create"]) {
      const cell = (w) => `${median(sequential[w.name][kind]).toFixed(2)} / ${percentile(sequential[w.name][kind], 0.9).toFixed(2)} ms`;
      const diff = before ? ` | ${(median(sequential.product[kind]) - median(sequential.before[kind])).toFixed(2)} ms` : "";
      md(`| ${{ read: "read hit", update: "update", create: "create with email" }[kind]} | ${products.map(cell).join(" | ")}${diff} |`);
    }
    md();
  }

  md("<details><summary>Every wrk run</summary>");
  md();
  md("| round | scenario | worker | requests | req/s | p50 | p99 | mean | CPU per request | errors |");
  md("|---|---|---|---|---|---|---|---|---|---|");
  for (const s of scenarios) {
    for (const w of workers.filter((w) => runsScenario(w, s))) {
      results[s][w.name].forEach((r, i) => {
        md(`| ${i + 1} | ${s} | ${w.name} | ${r.requests} | ${r.rps.toFixed(s === "update-one" ? 1 : 0)} | ${ms(r.p50_us)} ms | ${ms(r.p99_us)} ms | ${ms(r.mean_us)} ms | ${r.cpu_ms_per_request.toFixed(3)} ms | ${r.errors} |`);
      });
    }
  }
  md();
  md("</details>");
  md();
  writeFileSync(join(OUT, "latency.json"), JSON.stringify({ summary, sequential: Object.fromEntries(Object.entries(sequential).map(([w, k]) => [w, Object.fromEntries(Object.entries(k).map(([kind, xs]) => [kind, { median: median(xs), p90: percentile(xs, 0.9) }]))])) }, null, 1));

  out = fragments.size;
  md("## 4. Size and start");
  md();
  md("| | product | minimal JS worker | minimal Rust worker |");
  md("|---|---|---|---|");
  md(`| code, raw | wasm ${sizes.wasm[0]} B + JS glue ${sizes.glue[0]} B | ${sizes.minimal[0]} B of JavaScript | wasm ${sizes.rustWasm[0]} B + JS glue ${sizes.rustGlue[0]} B |`);
  md(`| code, \`gzip -9\` | wasm ${sizes.wasm[1]} B + JS glue ${sizes.glue[1]} B | ${sizes.minimal[1]} B | wasm ${sizes.rustWasm[1]} B + JS glue ${sizes.rustGlue[1]} B |`);
  md(`| function names, beside the module (\`build/index_bg.names.txt\`, not deployed) | ${sizes.names[0]} B, \`gzip -9\` ${sizes.names[1]} B | – | – |`);
  const startsOf = (name) => workers.find((w) => w.name === name).starts;
  const startCell = (name) => `${median(startsOf(name)).toFixed(0)} ms (${startsOf(name).map((t) => t.toFixed(0)).join(", ")})`;
  md(`| \`wrangler dev\` spawned → first answered request (median of ${STARTS}) | ${startCell("product")} | ${startCell("minimal")} | ${startCell("minimal-rust")} |`);
  md();
  md(`Start-up is measured from spawning \`node_modules/.bin/wrangler dev\` (no build step: \`scripts/bench/worker/wrangler.toml\` serves the already built \`build/worker/shim.mjs\`) to the first 200 answer to \`GET /health\`, polled every 20 ms; it includes wrangler's own start, its bundling, workerd's start and the compilation of the module. The workers start in turn, the order rotating.`);
  md();

  const sections = wasmSections(wasm);
  md("Where the wasm's bytes go (its sections, raw):");
  md();
  md("| section | bytes | share |");
  md("|---|---|---|");
  for (const [name, bytes] of sections) md(`| ${name} | ${bytes} | ${((100 * bytes) / wasm.length).toFixed(1)} % |`);
  md();

  mkdirSync(OUT, { recursive: true });
  for (const [name, lines] of Object.entries(fragments)) writeFileSync(join(OUT, `${name}.md`), lines.join("\n") + "\n");
  writeFileSync(join(OUT, "results.json"), JSON.stringify({ sizes, summary, sequential, results, backfill, starts: workers.map((w) => w.starts) }, null, 1));
  log(`wrote ${OUT}/{backfill,load,size}.md`);
}

/** The sizes of a wasm module's sections: code, data, and each custom section by name. */
function wasmSections(bytes) {
  const ids = { 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global", 7: "export", 9: "element", 10: "code (functions)", 11: "data (constants, strings, tables)", 12: "data count" };
  const leb = (i) => {
    let value = 0, shift = 0, byte;
    do {
      byte = bytes[i++];
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return [value, i];
  };
  const sizes = new Map();
  let i = 8;
  while (i < bytes.length) {
    const id = bytes[i++];
    const [size, start] = leb(i);
    let name = ids[id] ?? `section ${id}`;
    if (id === 0) {
      const [len, at] = leb(start);
      name = `custom \`${new TextDecoder().decode(bytes.subarray(at, at + len))}\``;
      if (name === "custom `name`") name += " (function names: scripts/build.sh should have moved them out)";
    }
    sizes.set(name, (sizes.get(name) ?? 0) + size);
    i = start + size;
  }
  return [...sizes].sort((a, b) => b[1] - a[1]).slice(0, 6);
}

async function miniflareVersion() {
  const pkg = JSON.parse(readFileSync(join(ROOT, "node_modules/miniflare/package.json"), "utf8"));
  return pkg.version;
}

const deadline = setTimeout(() => {
  console.error("[bench] time limit reached: stopping");
  process.exit(124);
}, Number(process.env.BENCH_TIME_LIMIT_S ?? 1800) * 1000);
deadline.unref();

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
