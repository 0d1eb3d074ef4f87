#!/usr/bin/env node
// Writes deterministic legacy data for the OLD store (OTP_AUTH_KV) as a JSON array in
// wrangler's bulk format, ready for:
//   npx wrangler kv bulk put .seed/legacy.json --binding OTP_AUTH_KV --local
//
// Usage: node scripts/seed-legacy.mjs [--customers N] [--seed S] [--out FILE]

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { generateLegacyData, MESSY } from "./legacy-data.mjs";

function usage(message) {
  if (message) console.error(`seed-legacy: ${message}`);
  console.error("usage: node scripts/seed-legacy.mjs [--customers N] [--seed S] [--out FILE]");
  process.exit(2);
}

function intOption(name, raw, fallback, min) {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min) usage(`--${name} must be an integer >= ${min}, got '${raw}'`);
  return Number(raw);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      customers: { type: "string" },
      seed: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  }));
} catch (err) {
  usage(err.message);
}
if (values.help) usage();

const customers = intOption("customers", values.customers, 1000, 0);
const seed = intOption("seed", values.seed, 1, 0);
const out = resolve(values.out ?? ".seed/legacy.json");

const entries = generateLegacyData({ customers, seed });
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify(entries) + "\n");

const withTtl = entries.filter((e) => e.expiration !== undefined).length;
const withMeta = entries.filter((e) => e.metadata !== undefined).length;
console.log(
  `wrote ${entries.length} keys to ${out} (${customers} customers, seed ${seed}, ` +
    `${Object.keys(MESSY).length} messy cases, ${withTtl} with TTL, ${withMeta} with metadata)`,
);
