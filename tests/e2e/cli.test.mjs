// The operator's runbook, end to end in workerd, driven through the command-line client
// (target/debug/kv-migrate, or $KV_MIGRATE_BIN): a backup first, phases 0→5 with the
// backfill and a verification, a forced gate that shows up in the audit, a rollback from
// 5 to 2 and then to 0 while a client keeps writing, and an export restored into an
// empty store.

import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { generateLegacyData } from "../../scripts/legacy-data.mjs";
import { customerKey, getJson, kvMigrate, startWorker } from "./harness.mjs";

const work = mkdtempSync(join(tmpdir(), "kv-migrate-e2e-"));
const backupFile = join(work, "old-store.ndjson");
let h;
let seeded; // the old store as seeded: key → { value (bytes), metadata, expiration }

const cli = (args, worker = h, options) => kvMigrate(worker, args, options);

async function ok(args, worker, options) {
  const run = await cli(args, worker, options);
  assert.equal(run.code, 0, `kv-migrate ${args.join(" ")} exited ${run.code}\n${run.stdout}\n${run.stderr}`);
  return run;
}

/** Every key of a namespace with its bytes, metadata and expiration. */
async function snapshot(kv) {
  const result = new Map();
  let cursor;
  for (;;) {
    const page = await kv.list({ cursor });
    for (const key of page.keys) {
      if (key.name.startsWith("__migration/")) continue;
      const { value, metadata } = await kv.getWithMetadata(key.name, "arrayBuffer");
      result.set(key.name, {
        value: Buffer.from(value).toString("base64"),
        metadata: metadata ?? null,
        expiration: key.expiration ?? null,
      });
    }
    if (page.list_complete) return result;
    cursor = page.cursor;
  }
}

before(async () => {
  h = await startWorker({ bindings: { VERIFICATION_PERIOD_SECONDS: "3600" } });
  const old = h.old();
  const entries = generateLegacyData({ customers: 150, seed: 21 });
  for (const { key, value, expiration, metadata } of entries) {
    await old.put(key, value, { ...(expiration ? { expiration } : {}), ...(metadata ? { metadata } : {}) });
  }
  // A value that is not UTF-8 must survive the backup byte for byte.
  await old.put("customer_binary_blob", new Uint8Array([0xff, 0x00, 0xfe, 0x41]), { metadata: { kind: "blob" } });
  seeded = await snapshot(old);
});
after(async () => {
  await h?.stop();
});

test("a token is minted locally and the status reads the default phase", async () => {
  const token = await ok(["token"]);
  assert.match(token.stdout.trim(), /^[\w-]+\.[\w-]+\.[\w-]+$/);
  const status = await ok(["status"]);
  assert.match(status.stdout, /^phase 0 legacy/m);
  assert.match(status.stdout, /forward to 1: allowed/);
  const json = JSON.parse((await ok(["status", "--json"])).stdout);
  assert.equal(json.phase.current, 0);
});

test("exit codes tell scripts what happened", async () => {
  assert.equal((await cli(["phase", "3"])).code, 3, "a refused gate exits 3");
  const unauthorized = await cli(["status"], h, { env: { KV_MIGRATE_TOKEN: "not-a-jwt" } });
  assert.equal(unauthorized.code, 4);
  assert.match(unauthorized.stderr, /invalid_token|unauthorized/);
  assert.equal((await cli(["phase", "9"])).code, 2, "a bad command line exits 2");
  assert.equal((await cli(["status", "--url", "http://127.0.0.1:9"])).code, 6, "an unreachable worker exits 6");
  assert.equal((await cli(["rollback", "3", "--yes"])).code, 7, "a rollback upwards is an invalid request");
  // Credentials never go on the command line.
  assert.equal((await cli(["status", "--token", "x"])).code, 2, "--token is gone");
  assert.equal((await cli(["token", "--secret", "x"])).code, 2, "--secret is gone");
});

test("a rollback, a forced gate, an overwriting import and a backfill reset need --yes without a terminal", async () => {
  for (const args of [
    ["rollback", "0"],
    ["phase", "1", "--force", "--reason", "no"],
    ["import", "--store", "old", "--overwrite", "-"],
    ["backfill", "reset"],
  ]) {
    const refused = await cli(args);
    assert.equal(refused.code, 8, `${args.join(" ")}: ${refused.stderr}`);
    assert.match(refused.stderr, /needs confirmation and standard input is not a terminal; pass --yes/);
    assert.ok(refused.stderr.includes(h.url), "the prompt names the worker");
  }
  assert.equal(JSON.parse((await ok(["status", "--json"])).stdout).phase.current, 0, "nothing moved");
});

test("the token comes from a file, the environment or a profile, never from an open file", async () => {
  const tokenFile = join(work, "admin.token");
  const token = (await ok(["token"])).stdout.trim();
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const noSecret = { JWT_SECRET: "" };
  assert.match((await ok(["status", "--token-file", tokenFile], h, { env: noSecret })).stdout, /^phase 0/m);
  assert.equal((await cli(["status"], h, { env: noSecret })).code, 4, "no token at all");

  chmodSync(tokenFile, 0o644);
  const open = await cli(["status", "--token-file", tokenFile], h, { env: noSecret });
  assert.equal(open.code, 1);
  assert.match(open.stderr, /open to group or others \(mode 644\); run `chmod 600/);
  assert.ok(!open.stderr.includes(token), "the token is never printed");
  chmodSync(tokenFile, 0o600);

  // A profile names the URL and the token file; --url and the environment win over it.
  const config = join(work, "config.toml");
  writeFileSync(config, `[env.local]\nurl = "${h.url}"\ntoken_file = "admin.token"\n`);
  const profileEnv = { KV_MIGRATE_CONFIG: config, KV_MIGRATE_URL: "", JWT_SECRET: "" };
  assert.match((await ok(["--env", "local", "status"], h, { env: profileEnv })).stdout, /^phase 0/m);
  assert.match((await ok(["status"], h, { env: { ...profileEnv, KV_MIGRATE_ENV: "local" } })).stdout, /^phase 0/m);
  const overridden = await cli(["--env", "local", "status", "--url", "http://127.0.0.1:9"], h, { env: profileEnv });
  assert.equal(overridden.code, 6, "--url wins over the profile");
  const unknown = await cli(["--env", "prod", "status"], h, { env: profileEnv });
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no \[env\.prod\].*it has: local/);
});

test("completions are printed for bash, zsh and fish", async () => {
  for (const shell of ["bash", "zsh", "fish"]) {
    const run = await ok(["completions", shell]);
    assert.match(run.stdout, /kv-migrate/);
    assert.match(run.stdout, /rollback/);
  }
});

test("a dry run shows the gates of a move and changes nothing", async () => {
  const allowed = await ok(["phase", "1", "--dry-run"]);
  assert.match(allowed.stdout, /phase 0 → 1 \(dry run, nothing changed\): allowed/);
  const skipping = await cli(["phase", "3", "--dry-run"]);
  assert.equal(skipping.code, 3, skipping.stderr);
  assert.match(skipping.stdout, /adjacent/);
  const forced = JSON.parse((await ok(["phase", "3", "--dry-run", "--force", "--reason", "r", "--json"])).stdout);
  assert.equal(forced.allowed, true);
  assert.equal(forced.forced, true);
  assert.equal(JSON.parse((await ok(["status", "--json"])).stdout).phase.current, 0, "nothing moved");
});

test("backup first: the export of the old store holds every key", async () => {
  const run = await ok(["export", "--store", "old"]);
  writeFileSync(backupFile, run.stdout);
  const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, seeded.size);
  const blob = lines.find((l) => l.key === "customer_binary_blob");
  assert.equal(blob.base64, Buffer.from([0xff, 0x00, 0xfe, 0x41]).toString("base64"));
  assert.deepEqual(blob.metadata, { kind: "blob" });
});

test("phases 0→5 with the backfill, a verification and a forced gate in the audit", async () => {
  for (const phase of ["1", "2", "3"]) await ok(["phase", phase]);
  const dry = await ok(["backfill", "--dry-run", "--max-records", "50"]);
  assert.match(dry.stdout, /dry run/);
  await ok(["backfill", "--until-done"]);
  const watched = await ok(["status", "--watch", "--interval", "1"]);
  assert.match(watched.stdout, /complete/);
  await ok(["emails", "--dry-run"]);
  const verify = await ok(["verify", "--full"]);
  assert.match(verify.stdout, /full clean/);
  await ok(["phase", "4"]);

  const refused = await cli(["phase", "5"]);
  assert.equal(refused.code, 3, refused.stderr);
  assert.match(refused.stderr, /verification_period/);
  const wouldRefuse = await cli(["phase", "5", "--dry-run"]);
  assert.equal(wouldRefuse.code, 3, wouldRefuse.stderr);
  assert.match(wouldRefuse.stdout, /refused\n {2}- verification_period/);
  await ok(["phase", "5", "--force", "--reason", "runbook drill: skip the verification period", "--yes"]);

  const audit = JSON.parse((await ok(["audit", "--json", "--limit", "50"])).stdout);
  const forced = audit.entries.find((e) => e.forced && e.to === 5);
  assert.ok(forced, JSON.stringify(audit.entries));
  assert.deepEqual(forced.unmetGates, ["verification_period"]);
  assert.equal(forced.reason, "runbook drill: skip the verification period");
  const human = await ok(["audit"]);
  assert.match(human.stdout, /phase_change 4→5 FORCED \[verification_period\]/);
});

test("a rollback from 5 to 2 and on to 0 while a client keeps writing loses nothing", async () => {
  const acknowledged = new Map(); // customer id → the last name acknowledged, or null once deleted
  let writing = true;
  let n = 0;
  const writer = (async () => {
    while (writing) {
      n += 1;
      const id = `cust_${String(n % 40).padStart(6, "0")}`;
      const name = `written ${n}`;
      const res =
        n % 13 === 0
          ? await h.request("DELETE", `/customer/${id}`, { token: h.serviceToken })
          : await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { name } });
      if (res.status === 200) acknowledged.set(id, n % 13 === 0 ? null : name);
      else assert.ok([404, 503].includes(res.status), `${res.status} ${res.text}`);
    }
  })();

  // The plan first: a jump into phase 2, the reverse sync, then down to 0.
  const plan = JSON.parse((await ok(["rollback", "0", "--dry-run", "--json"])).stdout);
  assert.equal(plan.allowed, true, JSON.stringify(plan));
  const planned = plan.steps
    .filter((s) => s.step !== "repair" && s.step !== "wait")
    .map((s) => (s.step === "move" ? `move ${s.to}` : s.step));
  assert.deepEqual(planned, ["move 2", "sync", "move 1", "move 0"]);
  const human = await ok(["rollback", "0", "--dry-run"]);
  assert.match(human.stdout, /1\. move phase 5 → 2.*\n.*2\. reverse sync/);
  assert.equal(JSON.parse((await ok(["status", "--json"])).stdout).phase.current, 5, "a dry run moves nothing");

  const startedBefore = n;
  const toTwo = await ok(["rollback", "2", "--yes"]);
  assert.match(toTwo.stdout, /moved phase 5 → 2/);
  assert.match((await ok(["status"])).stdout, /reverse sync .*(copy|count|complete)/);
  const toZero = await ok(["rollback", "0", "--yes"]);
  assert.match(toZero.stdout, /reverse sync: scanned/);
  assert.match(toZero.stdout, /rollback complete: phase 0/);
  const during = n - startedBefore;
  // Then on in phase 0 for a while, so that many customers were written in all.
  while (n < startedBefore + during + 20) await new Promise((r) => setTimeout(r, 50));
  writing = false;
  await writer;
  // How many overlap depends on the machine's speed; one suffices to race the sync.
  assert.ok(during >= 1, `the client wrote during the rollback (${during} requests)`);
  assert.ok(acknowledged.size > 10, `the client's writes were acknowledged (${acknowledged.size})`);

  // Phase 0 reads the old store alone: it must hold every acknowledged write.
  for (const [id, name] of acknowledged) {
    const stored = await getJson(h.old(), customerKey(id));
    if (name === null) assert.equal(stored, null, `${id} was deleted`);
    else assert.equal(stored?.name, name, `${id}: the old store lost an acknowledged write`);
  }
  const status = JSON.parse((await ok(["status", "--json"])).stdout);
  assert.equal(status.phase.current, 0);
  assert.equal(status.oldStoreDiverged, false);
});

test("an export restored into an empty store reproduces it exactly", async () => {
  const empty = await startWorker();
  try {
    const restored = await ok(["import", "--store", "old", backupFile], empty);
    assert.match(restored.stdout, new RegExp(`${seeded.size} written`));
    assert.deepEqual(await snapshot(empty.old()), seeded);
    // Importing again writes nothing: keys already there are kept.
    const again = await ok(["import", "--store", "old", backupFile], empty);
    assert.match(again.stdout, /0 written/);
  } finally {
    await empty.stop();
  }
  assert.ok(readFileSync(backupFile).length > 0);
});
