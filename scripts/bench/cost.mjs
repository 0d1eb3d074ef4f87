#!/usr/bin/env node
// Section 6 of BENCHMARKS.md (scripts/bench/run.sh calls it): what a million requests of
// each kind cost at list price, before and after the customers' and emails' Durable
// Objects, from
//   - kv.json (`cargo bench --bench native -- --only kv --json`): this build's exact KV
//     operations, object requests and object storage operations per request, and the
//     build before's KV operations (`--before`);
//   - latency.json (scripts/bench/workerd.mjs): unloaded latencies of both builds, from
//     which the time a write keeps its objects active is estimated.
// Prints Markdown. Options: --out-dir DIR (where both files are; target/bench).

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const { values: opt } = parseArgs({ options: { "out-dir": { type: "string", default: join(ROOT, "target/bench") } } });
const OUT = resolve(opt["out-dir"]);

// List prices, US$ per million, beyond the Workers Paid plan's monthly inclusions (which
// this ignores: 10 M KV reads and 1 M each of writes, deletes and lists; 1 M Durable
// Object requests and 400,000 GB-s; 25 billion rows read and 50 million rows written).
// Sources (looked up 2026-11-30):
//   https://developers.cloudflare.com/kv/platform/pricing/
//   https://developers.cloudflare.com/durable-objects/platform/pricing/
const PRICE = {
  kvRead: 0.5, // per million keys read
  kvWrite: 5.0, // per million writes; deletes and lists cost the same
  doRequest: 0.15, // per million requests (each fetch of a stub is one)
  doGbS: 12.5, // per million GB-s of duration, billed at 128 MB while the object is active
  doRowRead: 0.001, // SQLite-backed storage: per million rows read
  doRowWritten: 1.0, // per million rows written
};
const GB = 0.128;

const rows = JSON.parse(readFileSync(join(OUT, "kv.json"), "utf8"));
const latency = existsSync(join(OUT, "latency.json")) ? JSON.parse(readFileSync(join(OUT, "latency.json"), "utf8")) : undefined;
const seq = latency?.sequential ?? {};

const kvCost = (kv) => (kv.reads * PRICE.kvRead + (kv.writes + kv.deletes + kv.lists) * PRICE.kvWrite);
const kvText = (kv) => `${kv.reads}r${kv.lists ? ` ${kv.lists}l` : ""} ${kv.writes + kv.deletes}w`;

// The time a write keeps its objects active, estimated from unloaded latencies: the write's
// median minus the read hit's (the worker's own part of a write is about a read hit's:
// token, routing, phase; the rest runs in the objects). The customer's object is active
// that long; the email's runs inside it, so a claim adds at most as much again.
const objectMs = {};
if (seq.product) {
  objectMs.update = Math.max(0, seq.product.update.median - seq.product.read.median);
  objectMs.create = Math.max(0, seq.product.create.median - seq.product.read.median);
}
const activeMs = (endpoint) => (endpoint === "create" ? objectMs.create : objectMs.update);
const durationCost = (row) => {
  const ms = activeMs(row.endpoint);
  if (ms === undefined || row.objects.customer === 0) return 0;
  const objects = row.objects.customer + (row.objects.email > 0 ? 1 : 0);
  return (ms / 1000) * GB * objects * PRICE.doGbS;
};

const $ = (x) => `$${x.toFixed(x < 0.1 && x > 0 ? 3 : 2)}`;
const out = [];
const md = (line = "") => out.push(line);

md("## 6. Cost at list price, before and after the objects");
md();
md("US$ per **million requests** of each kind, at the Workers Paid plan's list prices beyond its monthly inclusions (the inclusions are left out: they are per account, not per request). Prices, looked up on 2026-11-30:");
md();
md("| | price | source |");
md("|---|---|---|");
md("| KV reads (each key of a bulk read counts) | $0.50 / million | [Workers KV pricing](https://developers.cloudflare.com/kv/platform/pricing/) |");
md("| KV writes, deletes, lists | $5.00 / million each | same |");
md("| Durable Object requests | $0.15 / million | [Durable Objects pricing](https://developers.cloudflare.com/durable-objects/platform/pricing/) |");
md("| Durable Object duration | $12.50 / million GB-s, billed at 128 MB while the object is active | same |");
md("| SQLite-backed object storage | $1.00 / million rows written, $0.001 / million rows read | same (storage billing) |");
md();
md("KV operations, object requests and object storage operations are the exact counts of section 1 (the build before's from its own count in this run); the duration is an **estimate**: " +
  (seq.product
    ? `an object is taken to be active for the unloaded latency of a write minus that of a read hit in this run (section 3, \"Unloaded latency\": ${objectMs.update.toFixed(1)} ms for a PATCH or DELETE, ${objectMs.create.toFixed(1)} ms for a create), once for the customer's object and once more for the email's when the request claims or releases an email (it runs inside the customer's, so this is an upper bound). Local KV is not the edge's: every 100 ms an object is active costs $0.16 per million requests per object.`
    : "no latency figures in this run, so the duration column is 0; every 100 ms an object is active costs $0.16 per million requests per object.") +
  " Storage rows are counted as one per put or delete, and one per list (an object's first request in an instance lists its storage: a few rows, at $0.001 per million rows read).");
md();

const endpoints = ["update", "create", "update with email change", "delete", "read hit", "by-email read", "fallback read"];
for (const phase of [3, 5, 0, 1, 2, 4]) {
  const inPhase = rows.filter((r) => r.phase === phase);
  if (!inPhase.length) continue;
  if (phase === 3) {
    md("### Phase 3 `backfill` (both stores written, reads fall back)");
  } else if (phase === 5) {
    md("### Phase 5 `complete` (the new store only)");
  } else {
    continue;
  }
  md();
  md("| request | before: KV ops | before: $ | after: KV ops · DO requests · storage rows r/w | after: KV $ | DO requests $ | DO storage $ | DO duration $ (est.) | **after: $** | after − before |");
  md("|---|---|---|---|---|---|---|---|---|---|");
  for (const endpoint of endpoints) {
    const r = inPhase.find((x) => x.endpoint === endpoint);
    if (!r) continue;
    const before = r.before ? kvCost(r.before) : undefined;
    const kv = kvCost(r.kv);
    const requests = (r.objects.customer + r.objects.email) * PRICE.doRequest;
    const storage = r.storage.writes * PRICE.doRowWritten + r.storage.reads * PRICE.doRowRead;
    const duration = durationCost(r);
    const after = kv + requests + storage + duration;
    md(`| ${endpoint} | ${r.before ? kvText(r.before) : "?"} | ${before === undefined ? "?" : $(before)} | ${kvText(r.kv)} · ${r.objects.customer + r.objects.email} · ${r.storage.reads}/${r.storage.writes} | ${$(kv)} | ${$(requests)} | ${$(storage)} | ${$(duration)} | **${$(after)}** | ${before === undefined ? "?" : `${after >= before ? "+" : "−"}${$(Math.abs(after - before))} (${((100 * (after - before)) / before).toFixed(0)} %)`} |`);
  }
  md();
}

md("Every phase, per million requests, before → after (KV + objects, duration estimated as above):");
md();
md(`| phase | ${endpoints.join(" | ")} |`);
md(`|---|${endpoints.map(() => "---|").join("")}`);
for (const phase of [0, 1, 2, 3, 4, 5]) {
  const cells = endpoints.map((endpoint) => {
    const r = rows.find((x) => x.phase === phase && x.endpoint === endpoint);
    if (!r) return "–";
    const after = kvCost(r.kv) + (r.objects.customer + r.objects.email) * PRICE.doRequest + r.storage.writes * PRICE.doRowWritten + r.storage.reads * PRICE.doRowRead + durationCost(r);
    return `${r.before ? $(kvCost(r.before)) : "?"} → ${$(after)}`;
  });
  md(`| ${phase} | ${cells.join(" | ")} |`);
}
md();
md("Reads cost the same before and after: one KV get for a hit, no object request. A write's objects add their requests ($0.15 per million each: one for the customer's object, one more for each claim or release of an email), the rows their memory writes ($1.00 per million rows: one per KV key written, plus the phase record the first time an object sees it and an email's holder) and their active time; KV stays the larger part of a write's bill.");
md();
process.stdout.write(out.join("\n") + "\n");
