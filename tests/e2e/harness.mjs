// Shared harness for the end-to-end tests: runs the compiled worker
// (build/worker/shim.mjs) in workerd through Miniflare's Node API, with both KV
// namespaces bound, and offers small helpers to speak HTTP to it and look into the
// stores directly.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { mintToken } from "../../scripts/dev-token.mjs";
import { CUSTOMER_PREFIX, EMAIL_PREFIX, customerKey, emailHash, emailKey, normalCustomerId } from "../../scripts/legacy-data.mjs";

export { customerKey, emailHash, emailKey, mintToken, CUSTOMER_PREFIX, EMAIL_PREFIX };

export const SHIM = fileURLToPath(new URL("../../build/worker/shim.mjs", import.meta.url));

const BUILD_MISSING =
  `${SHIM} does not exist: build the worker first with \`bash scripts/build.sh\``;

// Fail once per test file, before any test starts, when the worker is not built.
if (!existsSync(SHIM)) throw new Error(BUILD_MISSING);

/** The test secret the worker is started with (>= 32 chars). */
export const JWT_SECRET = "e2e-test-secret-do-not-use-in-production-0123456789";

const KV_MIGRATE =
  process.env.KV_MIGRATE_BIN ??
  fileURLToPath(new URL("../../target/debug/kv-migrate", import.meta.url));

/**
 * The environment kv-migrate runs with against `worker`: no profile, a minted token.
 * `env` adds to it; a variable set to undefined is removed.
 */
export function kvMigrateEnv(worker, env = {}) {
  const all = {
    ...process.env,
    KV_MIGRATE_URL: worker.url,
    JWT_SECRET,
    ADMIN_JWT_SECRET: undefined,
    KV_MIGRATE_TOKEN: undefined,
    KV_MIGRATE_TOKEN_FILE: undefined,
    KV_MIGRATE_ENV: undefined,
    KV_MIGRATE_CONFIG: undefined,
    ...env,
  };
  return Object.fromEntries(Object.entries(all).filter(([, value]) => value !== undefined));
}

export { KV_MIGRATE };

/**
 * Runs the command-line client (target/debug/kv-migrate, or $KV_MIGRATE_BIN) against a
 * started worker; resolves with its exit code and output. `env` adds to or overrides
 * the environment; standard input is not a terminal (confirmations need --yes).
 */
export function kvMigrate(worker, args, { env } = {}) {
  if (!existsSync(KV_MIGRATE)) throw new Error(`${KV_MIGRATE} does not exist: run \`cargo build --bin kv-migrate\``);
  return new Promise((resolve, reject) => {
    const child = spawn(KV_MIGRATE, args, {
      env: kvMigrateEnv(worker, env),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out = [];
    const err = [];
    child.stdout.on("data", (d) => out.push(d));
    child.stderr.on("data", (d) => err.push(d));
    child.on("error", reject);
    child.on("close", (code) =>
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
  });
}

/** Phase numbers and names, DESIGN.md §3. */
export const PHASE_NAMES = ["legacy", "dual_write", "read_new", "backfill", "new_primary", "complete"];
export const PHASES = [0, 1, 2, 3, 4, 5];

/**
 * Where a phase sends writes and reads (DESIGN.md §3), from the point of view of a
 * test: `writes` lists the stores that a successful write must reach.
 */
export const ROUTING = {
  0: { writes: ["old"], readsNew: false, fallback: false },
  1: { writes: ["old", "new"], readsNew: false, fallback: false },
  2: { writes: ["new", "old"], readsNew: true, fallback: true },
  3: { writes: ["new", "old"], readsNew: true, fallback: true },
  4: { writes: ["new"], readsNew: true, fallback: true },
  5: { writes: ["new"], readsNew: true, fallback: false },
};

export const fallbackKey = (storeKey) => `__migration/fallback/${storeKey}`;
export const PHASE_KEY = "__migration/phase";

/**
 * Starts the worker. Returns a harness:
 *   h.url                     the worker's loopback URL, for other processes
 *   h.request(method, path, { token, body, rawBody, headers }) -> { status, json, text, headers }
 *   h.old(), h.new()          KV namespaces OTP_AUTH_KV and CUSTOMER_KV
 *   h.setPhase(n)             forced phase change through POST /admin/migrate/phase
 *   h.token({ role, sub, ... }) a token signed with the test secret
 *   h.reset()                 a worker started afresh: empty stores, a new coordinator
 *                             (the phase falls back to DEFAULT_PHASE)
 *   h.stop()
 */
/**
 * A client that keeps creating, updating and deleting customers until `stop.done` (and
 * at least 30 writes); returns what it was told, per customer id: { name } or "deleted".
 */
export async function liveClient(h, { stop, random, legacyCustomers }) {
  const told = new Map();
  let n = 0;
  while (!stop.done || n < 30) {
    n += 1;
    const pick = Math.floor(random() * 3);
    if (pick === 0) {
      const id = `live_${n}`;
      const res = await h.request("POST", "/customer", {
        token: h.serviceToken,
        body: { customerId: id, email: `live.${n}@e2e.example.com`, name: `created ${n}` },
      });
      if (res.status === 201) told.set(id, { name: `created ${n}` });
    } else {
      const id = normalCustomerId(1 + Math.floor(random() * legacyCustomers));
      if (told.get(id) === "deleted") continue;
      if (pick === 1) {
        const res = await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { name: `update ${n}` } });
        if (res.status === 200) told.set(id, { name: `update ${n}` });
      } else {
        const res = await h.request("DELETE", `/customer/${id}`, { token: h.serviceToken });
        if (res.status === 200) told.set(id, "deleted");
      }
    }
  }
  return told;
}

/** Miniflare's queues as wrangler.toml's commented sections declare them (design §13). */
const BACKFILL_QUEUES = {
  queueProducers: { BACKFILL_QUEUE: "customer-backfill" },
  queueConsumers: {
    "customer-backfill": {
      maxBatchSize: 8,
      maxBatchTimeout: 1,
      maxRetries: 5,
      deadLetterQueue: "customer-backfill-dlq",
    },
    "customer-backfill-dlq": { maxBatchSize: 100, maxBatchTimeout: 1 },
  },
};

/**
 * `options` adds Miniflare options to the worker (an Analytics Engine dataset, say);
 * `sidecars` are Workers run alongside it (a wrapped binding's implementation); `shared`
 * adds options of the whole Miniflare instance (`handleRuntimeStdio`, say).
 */
export async function startWorker({
  bindings = {},
  kvNamespaces = ["OTP_AUTH_KV", "CUSTOMER_KV"],
  queue = false,
  options: extra = {},
  sidecars = [],
  shared = {},
} = {}) {
  if (!existsSync(SHIM)) throw new Error(BUILD_MISSING);
  const worker = {
    modules: true,
    scriptPath: SHIM,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    // As wrangler.toml deploys it.
    compatibilityDate: "2026-04-26",
    kvNamespaces,
    // The coordinator of the phase record (docs/design.md §11) and the objects every
    // customer write and email claim runs in (§12).
    durableObjects: {
      COORDINATOR: "Coordinator",
      CUSTOMER_WRITER: "CustomerWriter",
      EMAIL_OWNER: "EmailOwner",
    },
    ...(queue ? BACKFILL_QUEUES : {}),
    bindings: {
      JWT_SECRET,
      DEFAULT_PHASE: "0",
      PHASE_CACHE_SECONDS: "0",
      PHASE_SETTLE_MARGIN_SECONDS: "0",
      // Local KV is strongly consistent: no window to wait out.
      KV_CONSISTENCY_WINDOW_SECONDS: "0",
      // Refusals and failures only: a line per request would bury the runners' output.
      LOG_LEVEL: "warn",
      ...bindings,
    },
    ...extra,
  };
  // A free loopback port, so a separate process (the command-line client) can reach it.
  const options =
    sidecars.length > 0
      ? { port: 0, ...shared, workers: [{ name: "customer-kv-migration", ...worker }, ...sidecars] }
      : { ...worker, port: 0, ...shared };
  let mf, url, oldKv, newKv;
  async function boot() {
    mf = new Miniflare(options);
    url = String(await mf.ready).replace(/\/$/, "");
    const namespace = (name) => (kvNamespaces.includes(name) ? mf.getKVNamespace(name) : undefined);
    oldKv = steady(await namespace("OTP_AUTH_KV"));
    newKv = steady(await namespace("CUSTOMER_KV"));
  }
  await boot();

  const token = (options = {}) =>
    mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", ...options });
  const adminToken = token({ role: "admin", sub: "e2e-admin" });
  const serviceToken = token({ role: "service", sub: "e2e-service" });

  async function request(method, path, { token: bearer, body, rawBody, headers = {} } = {}) {
    const init = { method, headers: { ...headers } };
    if (bearer) init.headers.authorization = `Bearer ${bearer}`;
    if (rawBody !== undefined) {
      init.body = rawBody;
      init.headers["content-type"] ??= "application/json";
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["content-type"] ??= "application/json";
    }
    const res = await mf.dispatchFetch(`http://localhost${path}`, init);
    const text = await res.text();
    let json;
    try {
      json = text.length ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, headers: res.headers };
  }

  async function listAll(kv, prefix) {
    const keys = [];
    let cursor;
    for (;;) {
      const page = await kv.list({ prefix, cursor });
      keys.push(...page.keys);
      if (page.list_complete) return keys;
      cursor = page.cursor;
    }
  }

  /** Puts generated legacy entries (with expirations and metadata) into OTP_AUTH_KV. */
  async function seedOld(entries) {
    for (let i = 0; i < entries.length; i += 500) {
      await Promise.all(
        entries.slice(i, i + 500).map(({ key, value, expiration, metadata }) =>
          oldKv.put(key, value, { ...(expiration ? { expiration } : {}), ...(metadata ? { metadata } : {}) }),
        ),
      );
    }
  }

  /** Empty stores and a new coordinator: a worker started afresh. */
  async function reset() {
    await mf.dispose();
    await boot();
  }

  async function currentPhase() {
    const res = await request("GET", "/health");
    assert.equal(res.status, 200, `GET /health: ${res.text}`);
    return res.json.phase;
  }

  /** Moves to phase `n` (forced, with a reason) and checks /health reports it. */
  async function setPhase(n) {
    if ((await currentPhase()) !== n) {
      const res = await request("POST", "/admin/migrate/phase", {
        token: adminToken,
        body: { phase: n, force: true, reason: `e2e setup: switch to phase ${n}` },
      });
      assert.equal(res.status, 200, `setPhase(${n}): POST /admin/migrate/phase answered ${res.status} ${res.text}`);
    }
    assert.equal(await currentPhase(), n, `setPhase(${n}): /health does not report the new phase`);
  }

  return {
    get mf() {
      return mf;
    },
    get url() {
      return url;
    },
    request,
    old: () => oldKv,
    new: () => newKv,
    store: (name) => (name === "old" ? oldKv : newKv),
    listAll,
    seedOld,
    reset,
    setPhase,
    currentPhase,
    token,
    adminToken,
    serviceToken,
    stop: () => mf.dispose(),
  };
}

/**
 * A KV namespace whose calls are retried when Miniflare's own synchronous proxy trips
 * its assertion (`message?.id === id` in `SynchronousFetcher`), which it does now and
 * then on a loaded machine, before the call reaches the store: a retry is then safe.
 */
function steady(kv) {
  if (!kv) return kv;
  const tripped = (err) => err?.code === "ERR_ASSERTION" && String(err.stack).includes("SynchronousFetcher");
  return new Proxy(
    {},
    {
      get(_, prop) {
        if (prop === "then") return undefined;
        return async (...args) => {
          for (let attempt = 1; ; attempt += 1) {
            let method;
            try {
              method = Reflect.get(kv, prop);
            } catch (err) {
              if (attempt < 3 && tripped(err)) continue;
              throw err;
            }
            return method.apply(kv, args);
          }
        };
      },
    },
  );
}

// ---------- assertions and small helpers shared by the test files ----------

/** Asserts an error answer: status and `error.code`. */
export function assertError(res, status, code, context = "") {
  const where = context ? `${context}: ` : "";
  assert.equal(res.status, status, `${where}expected ${status} ${code}, got ${res.status} ${res.text}`);
  assert.ok(res.json && res.json.error, `${where}expected an error body, got ${res.text}`);
  assert.equal(res.json.error.code, code, `${where}expected code ${code}, got ${res.text}`);
  assert.equal(typeof res.json.error.message, "string", `${where}error.message should be a string`);
}

/** Asserts a status, printing the body when it differs. */
export function assertStatus(res, status, context = "") {
  assert.equal(res.status, status, `${context ? context + ": " : ""}expected ${status}, got ${res.status} ${res.text}`);
}

/** Reads and parses a JSON value from a KV namespace (null when absent). */
export async function getJson(kv, key) {
  const text = await kv.get(key);
  return text === null ? null : JSON.parse(text);
}

export const isTombstone = (value) =>
  value !== null && typeof value === "object" && Object.hasOwn(value, "__tombstone");

/** A customer record for tests, with an old `updatedAt` so changes are visible. */
export function sampleRecord(customerId, email, extra = {}) {
  return {
    customerId,
    name: `Test ${customerId}`,
    email,
    companyName: "E2E Ltd",
    plan: "pro",
    tier: "gold",
    status: "active",
    subscriptions: ["otp-sms"],
    flairs: ["beta-tester"],
    displayName: "Tester",
    config: { locale: "en-GB" },
    features: { sso: false },
    createdAt: "2020-01-01T00:00:00Z",
    updatedAt: "2020-01-02T00:00:00Z",
    ...extra,
  };
}

/** Puts a record and its email mapping straight into the given stores. */
export async function seedCustomer(h, stores, record) {
  for (const name of stores) {
    const kv = h.store(name);
    await kv.put(customerKey(record.customerId), JSON.stringify(record));
    if (record.email) await kv.put(emailKey(emailHash(record.email)), record.customerId);
  }
}

/** A fresh, valid, unique customer id / email for a test. */
let counter = 0;
export function uniqueCustomer(label) {
  counter += 1;
  const id = `e2e_${label}_${counter}`.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 128);
  return { id, email: `${id.toLowerCase().replace(/_/g, ".")}@e2e.example.com` };
}
