// The customer lifecycle (create, update, read, fallback read, delete, ensure) in every
// phase 0–5, checking both stores directly after each action. Routing: DESIGN.md §3;
// tombstones and internal keys: docs/http-api.md.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  PHASES,
  PHASE_NAMES,
  ROUTING,
  assertError,
  assertStatus,
  customerKey,
  emailHash,
  emailKey,
  fallbackKey,
  getJson,
  isTombstone,
  sampleRecord,
  seedCustomer,
  startWorker,
  uniqueCustomer,
} from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
});
after(async () => {
  await h?.stop();
});

const STORES = ["old", "new"];
const storeList = (names) =>
  names.length === 2 ? "both stores" : `the ${names[0]} store only`;
const byEmailPath = (email) => `/customer/by-email/${encodeURIComponent(email)}`;

/** Where an existing (already migrated) record lives when a test starts. */
const seededStores = (phase) => (phase === 0 ? ["old"] : ["old", "new"]);

function assertTombstone(value, context) {
  assert.ok(isTombstone(value), `${context}: expected a tombstone, got ${JSON.stringify(value)}`);
  const { deletedAt } = value.__tombstone;
  assert.equal(typeof deletedAt, "string", `${context}: tombstone without deletedAt`);
  assert.ok(!Number.isNaN(Date.parse(deletedAt)), `${context}: deletedAt is not RFC 3339: ${deletedAt}`);
}

/** An email mapping that no longer resolves: absent, or a tombstone. */
async function assertNoLiveMapping(kv, email, context) {
  const raw = await kv.get(emailKey(emailHash(email)));
  if (raw === null) return;
  let parsed = null;
  try {
    parsed = JSON.parse(raw);
  } catch {
    // a plain customerId string: a live mapping
  }
  assert.ok(isTombstone(parsed), `${context}: mapping for ${email} still present: ${raw}`);
}

for (const phase of PHASES) {
  const route = ROUTING[phase];
  const untouched = STORES.filter((s) => !route.writes.includes(s));

  describe(`phase ${phase} (${PHASE_NAMES[phase]})`, () => {
    before(async () => {
      await h.reset();
      await h.setPhase(phase);
    });

    test(`phase ${phase}: create stores the record and its email mapping in ${storeList(route.writes)}`, async () => {
      const { id, email } = uniqueCustomer(`create_p${phase}`);
      const res = await h.request("POST", "/customer", {
        token: h.serviceToken,
        body: { customerId: id, name: "Created", email, plan: "free", extraField: { kept: true } },
      });
      assertStatus(res, 201, "POST /customer");
      assert.equal(res.json.customerId, id);
      assert.equal(res.json.email, email);
      assert.equal(res.json.name, "Created");
      assert.deepEqual(res.json.extraField, { kept: true });
      assert.ok(!Number.isNaN(Date.parse(res.json.createdAt)), `createdAt: ${res.json.createdAt}`);
      assert.ok(!Number.isNaN(Date.parse(res.json.updatedAt)), `updatedAt: ${res.json.updatedAt}`);

      for (const store of route.writes) {
        const kv = h.store(store);
        assert.deepEqual(await getJson(kv, customerKey(id)), res.json, `${store} store record`);
        assert.equal(await kv.get(emailKey(emailHash(email))), id, `${store} store mapping`);
      }
      for (const store of untouched) {
        const kv = h.store(store);
        assert.equal(await kv.get(customerKey(id)), null, `${store} store must not get the record`);
        assert.equal(await kv.get(emailKey(emailHash(email))), null, `${store} store must not get the mapping`);
      }

      const read = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assertStatus(read, 200, "GET after create");
      assert.deepEqual(read.json, res.json);
    });

    test(`phase ${phase}: PATCH with a new email updates the record and moves the mapping in ${storeList(route.writes)}`, async () => {
      const { id, email: oldEmail } = uniqueCustomer(`update_p${phase}`);
      const newEmail = `renamed.${oldEmail}`;
      const original = sampleRecord(id, oldEmail);
      const stores = seededStores(phase);
      await seedCustomer(h, stores, original);

      const res = await h.request("PATCH", `/customer/${id}`, {
        token: h.serviceToken,
        body: { email: newEmail, name: "Renamed" },
      });
      assertStatus(res, 200, "PATCH /customer/{id}");
      assert.equal(res.json.customerId, id);
      assert.equal(res.json.email, newEmail);
      assert.equal(res.json.name, "Renamed");
      assert.equal(res.json.plan, original.plan, "untouched fields are kept");
      assert.deepEqual(res.json.config, original.config, "untouched fields are kept");
      assert.equal(res.json.createdAt, original.createdAt);
      assert.notEqual(res.json.updatedAt, original.updatedAt, "updatedAt must change");
      assert.ok(Date.parse(res.json.updatedAt) > Date.parse(original.updatedAt), `updatedAt ${res.json.updatedAt}`);

      for (const store of route.writes) {
        const kv = h.store(store);
        assert.deepEqual(await getJson(kv, customerKey(id)), res.json, `${store} store record`);
        assert.equal(await kv.get(emailKey(emailHash(oldEmail))), null, `${store} store: old mapping must be gone`);
        assert.equal(await kv.get(emailKey(emailHash(newEmail))), id, `${store} store: new mapping`);
      }
      for (const store of untouched) {
        const kv = h.store(store);
        if (stores.includes(store)) {
          assert.deepEqual(await getJson(kv, customerKey(id)), original, `${store} store record must be untouched`);
          assert.equal(await kv.get(emailKey(emailHash(oldEmail))), id, `${store} store: old mapping untouched`);
        } else {
          assert.equal(await kv.get(customerKey(id)), null, `${store} store must not get the record`);
        }
        assert.equal(await kv.get(emailKey(emailHash(newEmail))), null, `${store} store must not get the new mapping`);
      }
    });

    test(`phase ${phase}: reads by id and by email return the latest value`, async () => {
      const { id, email } = uniqueCustomer(`read_p${phase}`);
      const newEmail = `latest.${email}`;
      await seedCustomer(h, seededStores(phase), sampleRecord(id, email));
      const patched = await h.request("PATCH", `/customer/${id}`, {
        token: h.serviceToken,
        body: { email: newEmail, displayName: "Latest" },
      });
      assertStatus(patched, 200, "PATCH");

      const byId = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assertStatus(byId, 200, "GET /customer/{id}");
      assert.deepEqual(byId.json, patched.json);

      const byEmail = await h.request("GET", byEmailPath(newEmail), { token: h.serviceToken });
      assertStatus(byEmail, 200, "GET /customer/by-email/{new email}");
      assert.deepEqual(byEmail.json, patched.json);

      const byNormalisedEmail = await h.request("GET", byEmailPath(`  ${newEmail.toUpperCase()} `), { token: h.serviceToken });
      assertStatus(byNormalisedEmail, 200, "GET /customer/by-email/{new email, upper case, padded}");
      assert.deepEqual(byNormalisedEmail.json, patched.json);

      const byOldEmail = await h.request("GET", byEmailPath(email), { token: h.serviceToken });
      assertError(byOldEmail, 404, "customer_not_found", "GET /customer/by-email/{previous email}");
    });

    if (route.fallback) {
      test(`phase ${phase}: a record only in the old store is served by id and by email, and the fallback is recorded`, async () => {
        const { id, email } = uniqueCustomer(`fallback_p${phase}`);
        const record = sampleRecord(id, email, { legacyOnly: { nested: [1, 2, 3] } });
        await seedCustomer(h, ["old"], record);

        const byId = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
        assertStatus(byId, 200, "GET /customer/{id}");
        assert.deepEqual(byId.json, record);

        const byEmail = await h.request("GET", byEmailPath(email), { token: h.serviceToken });
        assertStatus(byEmail, 200, "GET /customer/by-email/{email}");
        assert.deepEqual(byEmail.json, record);

        const hit = await getJson(h.new(), fallbackKey(customerKey(id)));
        assert.ok(hit, `CUSTOMER_KV should hold ${fallbackKey(customerKey(id))}`);
        assert.equal(hit.phase, phase, `fallback entry: ${JSON.stringify(hit)}`);
        assert.equal(typeof hit.at, "number", `fallback entry: ${JSON.stringify(hit)}`);

        const status = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
        assertStatus(status, 200, "GET /admin/migrate/status");
        assert.ok(status.json.fallbackHits.count >= 1, `fallbackHits: ${JSON.stringify(status.json.fallbackHits)}`);
      });

      test(`phase ${phase}: create refuses an id or an email held only by an old-store customer (409)`, async () => {
        const { id, email } = uniqueCustomer(`legacy_taken_p${phase}`);
        await seedCustomer(h, ["old"], sampleRecord(id, email));
        const sameId = await h.request("POST", "/customer", {
          token: h.serviceToken,
          body: { customerId: id, email: `other.${email}` },
        });
        assertError(sameId, 409, "customer_exists", "same id");
        const sameEmail = await h.request("POST", "/customer", {
          token: h.serviceToken,
          body: { customerId: `${id}_dup`, email },
        });
        assertError(sameEmail, 409, "email_taken", "same email");
        assert.equal(await h.new().get(customerKey(`${id}_dup`)), null, "no duplicate in the new store");
      });

      test(`phase ${phase}: ensure finds an old-store-only customer by email (200) instead of creating a duplicate`, async () => {
        const { id, email } = uniqueCustomer(`legacy_ensure_p${phase}`);
        const record = sampleRecord(id, email);
        await seedCustomer(h, ["old"], record);
        const res = await h.request("POST", "/customer/ensure", { token: h.serviceToken, body: { email } });
        assertStatus(res, 200, "ensure");
        assert.deepEqual(res.json, record);
      });

      test(`phase ${phase}: PATCH of an old-store-only customer writes the merged record to ${storeList(route.writes)}`, async () => {
        const { id, email } = uniqueCustomer(`legacy_patch_p${phase}`);
        const record = sampleRecord(id, email, { legacyField: { kept: [1, 2] } });
        await seedCustomer(h, ["old"], record);
        const res = await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { name: "Patched" } });
        assertStatus(res, 200, "PATCH");
        assert.deepEqual(res.json, { ...record, name: "Patched", updatedAt: res.json.updatedAt });
        assert.notEqual(res.json.updatedAt, record.updatedAt);
        for (const store of route.writes) {
          assert.deepEqual(await getJson(h.store(store), customerKey(id)), res.json, `${store} store record`);
        }
        for (const store of untouched) {
          assert.deepEqual(await getJson(h.store(store), customerKey(id)), record, `${store} store record untouched`);
        }
        // The email did not change: its mapping may stay in the old store only (the
        // backfill copies it); the lookup must still find the patched record.
        assert.equal(await h.old().get(emailKey(emailHash(email))), id, "old store mapping kept");
        const read = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
        assertStatus(read, 200, "GET after PATCH");
        assert.deepEqual(read.json, res.json);
        const byEmail = await h.request("GET", byEmailPath(email), { token: h.serviceToken });
        assertStatus(byEmail, 200, "by email after PATCH");
        assert.deepEqual(byEmail.json, res.json);
      });

      test(`phase ${phase}: DELETE of an old-store-only customer leaves a tombstone and the customer stays deleted`, async () => {
        const { id, email } = uniqueCustomer(`legacy_delete_p${phase}`);
        const record = sampleRecord(id, email);
        await seedCustomer(h, ["old"], record);
        const res = await h.request("DELETE", `/customer/${id}`, { token: h.serviceToken });
        assertStatus(res, 200, "DELETE");
        assertTombstone(await getJson(h.new(), customerKey(id)), "new store record");
        if (route.writes.includes("old")) {
          assert.equal(await h.old().get(customerKey(id)), null, "old record must be gone");
          assert.equal(await h.old().get(emailKey(emailHash(email))), null, "old mapping must be gone");
        } else {
          assert.deepEqual(await getJson(h.old(), customerKey(id)), record, "old record must be untouched");
        }
        assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 404, "customer_not_found", "GET after delete");
        assertError(await h.request("GET", byEmailPath(email), { token: h.serviceToken }), 404, "customer_not_found", "by email after delete");
        const recreate = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email } });
        assertStatus(recreate, 201, "the id and email are free again");
      });
    } else if (phase === 5) {
      test("phase 5: a record only in the old store is not found (no fallback)", async () => {
        const { id, email } = uniqueCustomer("nofallback_p5");
        await seedCustomer(h, ["old"], sampleRecord(id, email));

        assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 404, "customer_not_found", "by id");
        assertError(await h.request("GET", byEmailPath(email), { token: h.serviceToken }), 404, "customer_not_found", "by email");
        assert.equal(await h.new().get(fallbackKey(customerKey(id))), null, "no fallback entry in phase 5");
      });
    }

    if (!route.readsNew) {
      test(`phase ${phase}: reads go to the old store: a record only in the new store is not found`, async () => {
        const { id, email } = uniqueCustomer(`newonly_p${phase}`);
        await seedCustomer(h, ["new"], sampleRecord(id, email));

        assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 404, "customer_not_found", "by id");
        assertError(await h.request("GET", byEmailPath(email), { token: h.serviceToken }), 404, "customer_not_found", "by email");
      });
    }

    test(`phase ${phase}: when both stores hold a record, reads return the ${route.readsNew ? "new" : "old"} store's`, async () => {
      const { id, email } = uniqueCustomer(`both_p${phase}`);
      const oldRecord = sampleRecord(id, email, { name: "Old Copy" });
      const newRecord = sampleRecord(id, email, { name: "New Copy", updatedAt: "2020-01-03T00:00:00Z" });
      await seedCustomer(h, ["old"], oldRecord);
      await seedCustomer(h, ["new"], newRecord);
      const expected = route.readsNew ? newRecord : oldRecord;

      const byId = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assertStatus(byId, 200, "by id");
      assert.deepEqual(byId.json, expected);
      const byEmail = await h.request("GET", byEmailPath(email), { token: h.serviceToken });
      assertStatus(byEmail, 200, "by email");
      assert.deepEqual(byEmail.json, expected);
    });

    const deleteTitle =
      phase === 0
        ? "phase 0: delete removes the record and its mapping from the old store"
        : phase <= 3
          ? `phase ${phase}: delete writes a tombstone in the new store and removes the old key`
          : `phase ${phase}: delete writes a tombstone in the new store and leaves the old store untouched`;
    test(deleteTitle, async () => {
      const { id, email } = uniqueCustomer(`delete_p${phase}`);
      const record = sampleRecord(id, email);
      await seedCustomer(h, seededStores(phase), record);

      const res = await h.request("DELETE", `/customer/${id}`, { token: h.serviceToken });
      assertStatus(res, 200, "DELETE /customer/{id}");
      assert.deepEqual(res.json, { deleted: true, customerId: id });

      const oldKv = h.old();
      const newKv = h.new();
      if (phase === 0) {
        assert.equal(await oldKv.get(customerKey(id)), null, "old record must be gone");
        assert.equal(await oldKv.get(emailKey(emailHash(email))), null, "old mapping must be gone");
        assert.equal(await newKv.get(customerKey(id)), null, "phase 0 writes nothing to the new store");
      } else {
        assertTombstone(await getJson(newKv, customerKey(id)), "new store record");
        await assertNoLiveMapping(newKv, email, "new store");
        if (phase <= 3) {
          assert.equal(await oldKv.get(customerKey(id)), null, "old record must be gone");
          assert.equal(await oldKv.get(emailKey(emailHash(email))), null, "old mapping must be gone");
        } else {
          assert.deepEqual(await getJson(oldKv, customerKey(id)), record, "old record must be untouched");
          assert.equal(await oldKv.get(emailKey(emailHash(email))), id, "old mapping must be untouched");
        }
      }

      assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 404, "customer_not_found", "GET after delete");
      assertError(await h.request("GET", byEmailPath(email), { token: h.serviceToken }), 404, "customer_not_found", "by email after delete");

      if (route.readsNew && route.fallback) {
        // A stale copy in the old store (e.g. one a lagging writer left behind) must not
        // resurrect the customer through the fallback read.
        await seedCustomer(h, ["old"], record);
        assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 404, "customer_not_found", "GET with a stale old copy");
        assertError(await h.request("GET", byEmailPath(email), { token: h.serviceToken }), 404, "customer_not_found", "by email with a stale old copy");
        assert.equal(await newKv.get(fallbackKey(customerKey(id))), null, "a tombstoned key must not count as a fallback hit");
      }
    });

    test(`phase ${phase}: ensure creates once (201) and then returns the same customer (200)`, async () => {
      const { email } = uniqueCustomer(`ensure_p${phase}`);
      const first = await h.request("POST", "/customer/ensure", {
        token: h.serviceToken,
        body: { email, name: "Ensured" },
      });
      assertStatus(first, 201, "first ensure");
      const id = first.json.customerId;
      assert.equal(typeof id, "string");
      assert.equal(first.json.email, email);

      const second = await h.request("POST", "/customer/ensure", {
        token: h.serviceToken,
        body: { email: `  ${email.toUpperCase()}  `, name: "Ignored" },
      });
      assertStatus(second, 200, "second ensure");
      assert.equal(second.json.customerId, id);
      assert.equal(second.json.name, "Ensured", "ensure must not overwrite the existing record");

      for (const store of route.writes) {
        const kv = h.store(store);
        assert.deepEqual(await getJson(kv, customerKey(id)), first.json, `${store} store record`);
        assert.equal(await kv.get(emailKey(emailHash(email))), id, `${store} store mapping`);
      }
      for (const store of untouched) {
        assert.equal(await h.store(store).get(customerKey(id)), null, `${store} store must not get the record`);
      }
    });
  });
}
