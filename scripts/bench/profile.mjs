#!/usr/bin/env node
// Where a read hit's CPU goes: V8's sampling profiler, through `wrangler dev`'s inspector,
// while wrk sends read hits to the product and to the minimal Rust worker in turn
// (scripts/bench/run.sh runs it after workerd.mjs, on the stores that run left).
// Each function's self time is summed by what it belongs to, per request.
// Writes profile.md to --out-dir. Loads only 127.0.0.1; every step is time-bounded.
//
// Options: --out-dir DIR (target/bench)  --duration S (8)  --rounds N (2)

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { mintToken } from "../dev-token.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BENCH = join(ROOT, "scripts/bench");
const { values: opt } = parseArgs({
  options: {
    "out-dir": { type: "string", default: join(ROOT, "target/bench") },
    duration: { type: "string", default: "8" },
    rounds: { type: "string", default: "2" },
  },
});
const OUT = resolve(opt["out-dir"]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...args) => console.error("[profile]", ...args);

const secret = randomBytes(32).toString("hex");
const token = mintToken({ secret, sub: "bench-service", role: "service", ttl: 3600 });
const workers = [
  { name: "product", label: "after (this build)", config: join(BENCH, "worker/wrangler.toml"), names: join(ROOT, "build/index_bg.names.txt"), vars: ["LOG_LEVEL:warn"] },
  { name: "minimal-rust", label: "minimal Rust", config: join(BENCH, "minimal-rust/wrangler.toml"), names: join(BENCH, "minimal-rust/build/index_bg.names.txt"), vars: [] },
];

// What a wasm function belongs to, by its (demangled) name: the first rule that matches.
const OWNERS = [
  ["the record's JSON (parse, lossless form, text)", /customer_kv_migration::domain::(json|record)|indexmap|hashbrown|core::hash|DefaultHasher/],
  ["serde_json (token claims, phase, metadata)", /serde_json|serde_core|serde::|serde_wasm_bindgen/],
  ["token verification (HMAC-SHA256, base64)", /jwt_simple|hmac_sha256|ct_codecs|coarsetime/],
  ["allocator", /dlmalloc|__rdl_|__rust_(alloc|dealloc|realloc)|alloc::raw_vec|__wbindgen_(malloc|free|realloc)/],
  ["JavaScript ↔ wasm glue (wasm-bindgen, js-sys, workers-rs, futures)", /wasm_bindgen|js_sys|web_sys|worker::|externref|js-to-wasm|wasm-to-js|wbg|futures/],
  ["the product's other code", /customer_kv_migration/],
];
const ownerOf = (name) => OWNERS.find(([, re]) => re.test(name))?.[0] ?? "other (core, alloc, std)";

function names(file) {
  const map = new Map();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const tab = line.indexOf("\t");
    if (tab > 0) map.set(line.slice(0, tab), line.slice(tab + 1));
  }
  return map;
}

function wrk(url, seconds) {
  const out = execFileSync("wrk", ["-t1", "-c8", `-d${seconds}s`, "-s", join(BENCH, "wrk.lua"), url, "--", "read", token, "1", "1000"], { timeout: (seconds + 30) * 1000 }).toString();
  return JSON.parse(out.split("BENCH_JSON ")[1]).requests;
}

async function inspector(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(5000) })).json();
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise((ok, fail) => (ws.on("open", ok), ws.on("error", fail)));
  let id = 0;
  const pending = new Map();
  ws.on("message", (raw) => {
    const msg = JSON.parse(raw);
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  });
  const send = (method, params = {}) =>
    new Promise((ok) => {
      pending.set(++id, ok);
      ws.send(JSON.stringify({ id, method, params }));
    });
  return { send, close: () => ws.close() };
}

/** Self time per request by owner, from one profile. */
function attribute(profile, requests, nameOf) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const byOwner = new Map();
  const byFunction = new Map();
  let busy = 0;
  let wasm = 0;
  profile.samples.forEach((sample, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const { functionName, url } = nodes.get(sample).callFrame;
    if (functionName === "(idle)") return;
    busy += dt;
    if (!url.startsWith("wasm") && !/^(js-to-wasm|wasm-to-js)/.test(functionName)) return;
    wasm += dt;
    const index = /(?:wasm-function\[|\$func)(\d+)/.exec(functionName)?.[1] ?? /^\$?(\d+)$/.exec(functionName)?.[1];
    const name = (index && nameOf.get(index)) || functionName;
    const owner = ownerOf(name);
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + dt);
    byFunction.set(name, (byFunction.get(name) ?? 0) + dt);
  });
  const per = (m) => new Map([...m].map(([k, v]) => [k, v / requests]));
  return { busy: busy / requests, wasm: wasm / requests, byOwner: per(byOwner), byFunction: per(byFunction) };
}

async function profileOnce(w, port) {
  const args = ["dev", "--config", w.config, "--persist-to", join(OUT, "state", w.name), "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(port + 500), "--show-interactive-dev-session=false", "--log-level", "error", "--var", `JWT_SECRET:${secret}`];
  for (const v of w.vars) args.push("--var", v);
  const child = spawn(join(ROOT, "node_modules/.bin/wrangler"), args, { cwd: ROOT, detached: true, stdio: "ignore" });
  try {
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      if (i > 600) throw new Error(`${w.name} did not start`);
      try {
        const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
        await res.text();
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    wrk(url, 15); // warm-up: the isolate, its caches and V8's optimised code (workerd.mjs)
    const cdp = await inspector(port + 500);
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
    await cdp.send("Profiler.start");
    const requests = wrk(url, Number(opt.duration));
    const { result } = await cdp.send("Profiler.stop");
    cdp.close();
    return attribute(result.profile, requests, names(w.names));
  } finally {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      // already gone
    }
    await sleep(1000);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

async function main() {
  const runs = Object.fromEntries(workers.map((w) => [w.name, []]));
  for (let round = 0; round < Number(opt.rounds); round++) {
    for (const [i, w] of workers.entries()) {
      const r = await profileOnce(w, 8900 + i);
      runs[w.name].push(r);
      log(`round ${round + 1} ${w.name}: busy ${r.busy.toFixed(0)} µs/request, wasm ${r.wasm.toFixed(0)} µs`);
    }
  }
  const us = (x) => (x === undefined ? "–" : `${x.toFixed(1)} µs`);
  const med = (name, f) => median(runs[name].map(f));
  const owners = [...OWNERS.map(([o]) => o), "other (core, alloc, std)"];
  const md = [];
  md.push("### Where a read hit's CPU goes (sampling profiler)");
  md.push("");
  md.push(`V8's sampling profiler (every 100 µs) over \`wrangler dev\`'s inspector while wrk sends read hits for ${opt.duration} s (after 15 s of warm-up), to the product (at \`LOG_LEVEL=warn\`) and to the minimal Rust worker in turn, ${opt.rounds} rounds, medians; \`scripts/bench/profile.mjs\`. *Busy* is every sample that was not idle in the worker's isolate (JavaScript, wasm, the runtime's own calls such as KV's, garbage collection), per request; the wasm rows are the self time of wasm functions, named from \`build/index_bg.names.txt\` and summed by what they belong to. The profiler's own cost inflates every figure alike; compare the columns.`);
  md.push("");
  md.push(`| per read hit | ${workers.map((w) => w.label).join(" | ")} |`);
  md.push(`|---|${workers.map(() => "---|").join("")}`);
  md.push(`| busy in the isolate | ${workers.map((w) => us(med(w.name, (r) => r.busy))).join(" | ")} |`);
  md.push(`| of which in wasm | ${workers.map((w) => us(med(w.name, (r) => r.wasm))).join(" | ")} |`);
  for (const owner of owners) {
    md.push(`| wasm: ${owner} | ${workers.map((w) => us(med(w.name, (r) => r.byOwner.get(owner) ?? 0))).join(" | ")} |`);
  }
  md.push("");
  const last = runs.product.at(-1).byFunction;
  md.push("The product's 12 wasm functions with the most self time (last round):");
  md.push("");
  md.push("| function | self time per read hit |");
  md.push("|---|---|");
  for (const [name, t] of [...last].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    md.push(`| \`${name.replace(/::h[0-9a-f]{16}$/, "").replaceAll("|", "\\|").slice(0, 140)}\` | ${us(t)} |`);
  }
  md.push("");
  writeFileSync(join(OUT, "profile.md"), md.join("\n") + "\n");
  log(`wrote ${join(OUT, "profile.md")}`);
}

const deadline = setTimeout(() => {
  log("time limit reached");
  process.exit(1);
}, 600_000);
main()
  .then(() => clearTimeout(deadline))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
