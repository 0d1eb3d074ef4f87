// The worker in phase 2 (read_new) serving a seeded legacy store (scripts/legacy-data.mjs)
// with all its messy cases.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { MESSY, generateLegacyData, normalCustomerId } from "../../scripts/legacy-data.mjs";
import { assertError, assertStatus, customerKey, fallbackKey, getJson, startWorker } from "./harness.mjs";

const byEmailPath = (email) => `/customer/by-email/${encodeURIComponent(email)}`;

describe("phase 2 (read_new) over a seeded legacy store", () => {
  let h;
  let entries;
  const value = (key) => entries.find((e) => e.key === key).value;

  before(async () => {
    h = await startWorker();
    await h.reset();
    entries = generateLegacyData({ customers: 200, seed: 1 });
    const old = h.old();
    for (let i = 0; i < entries.length; i += 50) {
      await Promise.all(
        entries.slice(i, i + 50).map(({ key, value: v, expiration, metadata }) => {
          const options = {};
          if (expiration !== undefined) options.expiration = expiration;
          if (metadata !== undefined) options.metadata = metadata;
          return old.put(key, v, options);
        }),
      );
    }
    await h.setPhase(2);
  });
  after(async () => {
    await h?.stop();
  });

  test("the old store holds the seed, with its TTL and metadata", async () => {
    const keys = await h.listAll(h.old());
    assert.equal(keys.length, entries.length);
    const ttl = keys.find((k) => k.name === MESSY.withTtl.key);
    assert.ok(ttl.expiration > Date.now() / 1000 + 29 * 24 * 3600, `expiration ${ttl.expiration}`);
    const { metadata } = await h.old().getWithMetadata(MESSY.withMetadata.key);
    assert.deepEqual(metadata, { source: "otp-auth", v: 1 });
  });

  test("normal customers are served by id and by email from the old store, exactly as stored", async () => {
    for (const n of [1, 2, 57, 123, 200]) {
      const id = normalCustomerId(n);
      const stored = JSON.parse(value(customerKey(id)));
      const byId = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assertStatus(byId, 200, `GET ${id}`);
      assert.deepEqual(byId.json, stored);
      const byEmail = await h.request("GET", byEmailPath(stored.email), { token: h.serviceToken });
      assertStatus(byEmail, 200, `by email ${stored.email}`);
      assert.deepEqual(byEmail.json, stored);
      assert.ok(await h.new().get(fallbackKey(customerKey(id))), `fallback recorded for ${id}`);
    }
  });

  test("a record with unknown (nested) fields comes back with every field, in order", async () => {
    const stored = value(MESSY.unknownFields.key);
    const res = await h.request("GET", `/customer/${MESSY.unknownFields.customerId}`, { token: h.serviceToken });
    assertStatus(res, 200, "GET unknown-fields record");
    assert.deepEqual(res.json, JSON.parse(stored));
    assert.equal(JSON.stringify(res.json), stored, "same JSON text, key order included");
    const byEmail = await h.request("GET", byEmailPath(MESSY.unknownFields.email), { token: h.serviceToken });
    assertStatus(byEmail, 200, "by email");
    assert.equal(JSON.stringify(byEmail.json), stored);
  });

  test("a record without updatedAt is served as stored (no updatedAt invented on read)", async () => {
    const res = await h.request("GET", `/customer/${MESSY.noUpdatedAt.customerId}`, { token: h.serviceToken });
    assertStatus(res, 200, "GET no-updatedAt record");
    assert.deepEqual(res.json, JSON.parse(value(MESSY.noUpdatedAt.key)));
    const byEmail = await h.request("GET", byEmailPath(MESSY.noUpdatedAt.email), { token: h.serviceToken });
    assertStatus(byEmail, 200, "by email");
  });

  test("the records with a TTL and with KV metadata are served", async () => {
    for (const m of [MESSY.withTtl, MESSY.withMetadata]) {
      const res = await h.request("GET", `/customer/${m.customerId}`, { token: h.serviceToken });
      assertStatus(res, 200, `GET ${m.customerId}`);
      assert.deepEqual(res.json, JSON.parse(value(m.key)));
      const byEmail = await h.request("GET", byEmailPath(m.email), { token: h.serviceToken });
      assertStatus(byEmail, 200, `by email ${m.email}`);
      assert.equal(byEmail.json.customerId, m.customerId);
    }
  });

  test("two customers claiming one email: by email gives the one the mapping names", async () => {
    const res = await h.request("GET", byEmailPath(MESSY.sharedEmail.email), { token: h.serviceToken });
    assertStatus(res, 200, "by shared email");
    assert.equal(res.json.customerId, MESSY.sharedEmail.mappedTo);
    for (const id of MESSY.sharedEmail.customerIds) {
      assertStatus(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 200, `GET ${id}`);
    }
  });

  test("an orphan mapping (customer missing) gives 404 customer_not_found by email", async () => {
    const res = await h.request("GET", byEmailPath(MESSY.orphanMapping.email), { token: h.serviceToken });
    assertError(res, 404, "customer_not_found");
  });

  test("a corrupt legacy record gives 500 corrupt_record through the fallback, and the worker keeps serving", async () => {
    const res = await h.request("GET", `/customer/${MESSY.corruptJson.customerId}`, { token: h.serviceToken });
    assertError(res, 500, "corrupt_record");
    assertStatus(await h.request("GET", "/health"), 200, "health afterwards");
    assertStatus(await h.request("GET", `/customer/${normalCustomerId(3)}`, { token: h.serviceToken }), 200, "a good record afterwards");
  });

  test("the un-normalised-email customer is served by id, and not by email while its only mapping is un-normalised", async () => {
    const m = MESSY.unnormalisedEmail;
    const byId = await h.request("GET", `/customer/${m.customerId}`, { token: h.serviceToken });
    assertStatus(byId, 200, "GET by id");
    assert.deepEqual(byId.json, JSON.parse(value(m.key)));
    // The only mapping is keyed by the hash of the raw "  Mixed.Case@Example.COM ",
    // which a normalised lookup does not find (re-keying it is the email migration's job).
    const byEmail = await h.request("GET", byEmailPath(m.email), { token: h.serviceToken });
    assertError(byEmail, 404, "customer_not_found", "by email");
  });

  test("the un-normalised-email customer is found, not duplicated, given the email as it was hashed", async () => {
    const m = MESSY.unnormalisedEmail;
    const byEmail = await h.request("GET", byEmailPath(m.rawEmail), { token: h.serviceToken });
    assertStatus(byEmail, 200, "by the raw email");
    assert.equal(byEmail.json.customerId, m.customerId);
    const ensured = await h.request("POST", "/customer/ensure", { token: h.serviceToken, body: { email: m.rawEmail } });
    assertStatus(ensured, 200, "ensure finds the legacy customer");
    assert.equal(ensured.json.customerId, m.customerId);
    const created = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: "squatter", email: m.rawEmail } });
    assertError(created, 409, "email_taken", "create with its email");
  });

  test("an owner may not change their email (pre-hijacking); a service may", async () => {
    const id = normalCustomerId(11);
    const owner = h.token({ role: "customer", sub: id });
    const res = await h.request("PATCH", `/customer/${id}`, { token: owner, body: { email: "unclaimed@e2e.example.com" } });
    assertError(res, 403, "forbidden");
    const ensured = await h.request("POST", "/customer/ensure", { token: h.serviceToken, body: { email: "unclaimed@e2e.example.com" } });
    assertStatus(ensured, 201, "the address is still free for its real owner");
    assert.notEqual(ensured.json.customerId, id);
  });

  test("patching a legacy-only customer writes the merged record to both stores", async () => {
    const id = normalCustomerId(10);
    const stored = JSON.parse(value(customerKey(id)));
    const res = await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { displayName: "Patched" } });
    assertStatus(res, 200, "PATCH");
    assert.deepEqual(res.json, { ...stored, displayName: "Patched", updatedAt: res.json.updatedAt });
    assert.notEqual(res.json.updatedAt, stored.updatedAt, "updatedAt changed");
    assert.deepEqual(await getJson(h.new(), customerKey(id)), res.json, "new store");
    assert.deepEqual(await getJson(h.old(), customerKey(id)), res.json, "old store");
  });
});
