// Backups carry any value KV can hold (docs/http-api.md, "Backups"): values over the
// 64 KiB body limit are exported on pages bounded by bytes and restored by kv-migrate
// through POST /admin/migrate/import/value, byte for byte with metadata and expiration.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { assertError, assertStatus, kvMigrate, startWorker } from "./harness.mjs";

const MiB = 1024 * 1024;
const work = mkdtempSync(join(tmpdir(), "kv-migrate-large-"));
let h;

before(async () => {
  h = await startWorker();
});
after(async () => {
  await h?.stop();
});

async function ok(args) {
  const run = await kvMigrate(h, args);
  assert.equal(run.code, 0, `kv-migrate ${args.join(" ")} exited ${run.code}\n${run.stdout}\n${run.stderr}`);
  return run;
}

/** Every key of the old store with its bytes, metadata and expiration. */
async function snapshot(kv) {
  const result = new Map();
  for (const key of await h.listAll(kv, "")) {
    if (key.name.startsWith("__migration/")) continue;
    const { value, metadata } = await kv.getWithMetadata(key.name, "arrayBuffer");
    result.set(key.name, {
      value: Buffer.from(value).toString("base64"),
      metadata: metadata ?? null,
      expiration: key.expiration ?? null,
    });
  }
  return result;
}

async function postValue(query, body, token) {
  const init = { method: "POST", body, headers: { "content-type": "application/octet-stream" } };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body instanceof ReadableStream) init.duplex = "half";
  const res = await h.mf.dispatchFetch(`http://localhost/admin/migrate/import/value?${query}`, init);
  const text = await res.text();
  return { status: res.status, text, json: text ? JSON.parse(text) : undefined };
}

test("values of 1 MiB and a binary one survive export, wipe and import through kv-migrate", async () => {
  const old = h.old();
  const expiration = Math.floor(Date.now() / 1000) + 7200;
  // A record's text with quotes, escapes and non-ASCII, ~1 MiB.
  const notes = 'a "quoted" \\ naïve ✓ line\n'.repeat(40_000);
  const bigText = JSON.stringify({ customerId: "big_text", email: "big@e2e.example.com", notes });
  assert.ok(bigText.length > MiB);
  await old.put("customer_big_text", bigText, { expiration, metadata: { v: 7, note: "large" } });
  const binary = new Uint8Array(randomBytes(300 * 1024));
  binary[0] = 0xff; // never valid UTF-8
  await old.put("customer_big_binary", binary, { metadata: { kind: "blob" } });
  // Ten more values of 1 MiB: more than one export page holds (8 MiB).
  for (let i = 0; i < 10; i += 1) {
    await old.put(`customer_filler_${i}`, "f".repeat(MiB));
  }
  await old.put("customer_small", JSON.stringify({ customerId: "small" }));
  const seeded = await snapshot(old);
  assert.equal(seeded.size, 13);

  // The first page stops at about 8 MiB of values and says where to go on.
  const first = await h.request("GET", "/admin/migrate/export?store=old", { token: h.adminToken });
  assertStatus(first, 200, "first export page");
  assert.equal(first.headers.get("x-export-complete"), "false");
  assert.ok(first.headers.get("x-export-cursor"));
  const firstKeys = first.text.split("\n").filter(Boolean).length;
  assert.ok(firstKeys > 0 && firstKeys < 13, `${firstKeys} keys on the first page`);

  const backupFile = join(work, "large.ndjson");
  const exported = await ok(["export", "--store", "old"]);
  await writeFile(backupFile, exported.stdout);
  assert.match(exported.stderr, /exported 13 keys/);

  for (const name of seeded.keys()) await old.delete(name);
  assert.equal((await snapshot(old)).size, 0);

  const restored = await ok(["import", "--store", "old", backupFile]);
  assert.match(restored.stdout, /13 written/);
  assert.deepEqual(await snapshot(old), seeded);

  // Again: every key is there already, large ones included, and nothing is written.
  const again = await ok(["import", "--store", "old", backupFile]);
  assert.match(again.stdout, /0 written/);
  assert.ok(readFileSync(backupFile).length > 11 * MiB);
});

test("a value of 25 MiB imports raw and exports on a page of its own", async () => {
  const value = Buffer.alloc(25 * MiB, 0x63);
  const metadata = encodeURIComponent(JSON.stringify({ size: "max" }));
  const res = await postValue(`store=new&key=customer_max&metadata=${metadata}`, value, h.adminToken);
  assertStatus(res, 200, "raw import of 25 MiB");
  assert.deepEqual(res.json, { store: "new", written: 1, alreadyPresent: 0, skippedMigrationState: 0 });
  const page = await h.request("GET", "/admin/migrate/export?store=new&prefix=customer_max", { token: h.adminToken });
  assertStatus(page, 200, "export of 25 MiB");
  const line = JSON.parse(page.text);
  assert.equal(line.value.length, 25 * MiB);
  assert.deepEqual(line.metadata, { size: "max" });
});

// A worker that waited for the body would never answer: the timeout fails the test.
test("the raw value import reads a body only for an admin, and at most 25 MiB", { timeout: 60_000 }, async () => {
  const query = "store=old&key=customer_refused";
  // A body whose end never comes: answered at all only if the worker does not wait for it.
  const endless = () =>
    new ReadableStream({
      start(controller) {
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x62));
      },
      pull: () => new Promise(() => {}),
    });
  assertError(await postValue(query, endless()), 401, "missing_token");
  assertError(await postValue(query, endless(), h.serviceToken), 403, "forbidden");
  // Refused from its declared length (a chunked one is read up to the limit: errors.test.mjs).
  assertError(await postValue(query, Buffer.alloc(25 * MiB + 1), h.adminToken), 413, "payload_too_large");
  assertError(await postValue("store=old&key=..", "x", h.adminToken), 400, "invalid_query");
  assertError(await postValue("store=old&key=otp_session_x", "x", h.adminToken), 400, "invalid_query");
  assert.equal(await h.old().get("customer_refused"), null);
});
