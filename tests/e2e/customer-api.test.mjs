// Customer API behaviour that does not depend on the phase: the owner's view
// (/customer/me, own record, protected fields), merge-patch semantics, derived ids and
// email normalisation.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  assertError,
  assertStatus,
  customerKey,
  emailHash,
  emailKey,
  getJson,
  sampleRecord,
  seedCustomer,
  startWorker,
  uniqueCustomer,
} from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
  await h.reset();
  await h.setPhase(2);
});
after(async () => {
  await h?.stop();
});

const byEmailPath = (email) => `/customer/by-email/${encodeURIComponent(email)}`;

describe("owner access (role customer)", () => {
  let me;
  let other;
  let token;
  before(async () => {
    me = uniqueCustomer("owner");
    other = uniqueCustomer("someone_else");
    await seedCustomer(h, ["old", "new"], sampleRecord(me.id, me.email));
    await seedCustomer(h, ["old", "new"], sampleRecord(other.id, other.email));
    token = h.token({ role: "customer", sub: me.id });
  });

  test("GET /customer/me returns the caller's record", async () => {
    const res = await h.request("GET", "/customer/me", { token });
    assertStatus(res, 200, "GET /customer/me");
    assert.deepEqual(res.json, sampleRecord(me.id, me.email));
  });

  test("GET /customer/me for a token whose customer does not exist: 404 customer_not_found", async () => {
    const res = await h.request("GET", "/customer/me", { token: h.token({ role: "customer", sub: "cust_never_created" }) });
    assertError(res, 404, "customer_not_found");
  });

  test("the owner may read the own record by id and by email", async () => {
    const byId = await h.request("GET", `/customer/${me.id}`, { token });
    assertStatus(byId, 200, "by id");
    assert.equal(byId.json.customerId, me.id);
    const byEmail = await h.request("GET", byEmailPath(me.email), { token });
    assertStatus(byEmail, 200, "by email");
    assert.equal(byEmail.json.customerId, me.id);
  });

  test("the owner may not read another customer's record by id: 403 forbidden", async () => {
    assertError(await h.request("GET", `/customer/${other.id}`, { token }), 403, "forbidden", "by id");
  });

  test("the owner asking for another customer's email gets 404, as for an unknown email", async () => {
    // 404 rather than 403: the difference would tell a customer which addresses have accounts.
    const taken = await h.request("GET", byEmailPath(other.email), { token });
    assertError(taken, 404, "customer_not_found", "another customer's email");
    const unknown = await h.request("GET", byEmailPath("nobody.at.all@e2e.example.com"), { token });
    assertError(unknown, 404, "customer_not_found", "unknown email");
    assert.deepEqual(taken.json, unknown.json, "both answers are identical");
  });

  test("the owner may not patch another customer's record: 403 forbidden", async () => {
    const res = await h.request("PATCH", `/customer/${other.id}`, { token, body: { name: "Hijacked" } });
    assertError(res, 403, "forbidden");
    assert.equal((await getJson(h.new(), customerKey(other.id))).name, sampleRecord(other.id, other.email).name);
  });

  test("the owner may patch unprotected fields of the own record", async () => {
    const res = await h.request("PATCH", `/customer/${me.id}`, {
      token,
      body: { name: "Self Service", displayName: "Me", config: { locale: "fi-FI" } },
    });
    assertStatus(res, 200, "PATCH own record");
    assert.equal(res.json.name, "Self Service");
    assert.equal(res.json.displayName, "Me");
    assert.deepEqual(res.json.config, { locale: "fi-FI" });
    assert.deepEqual(await getJson(h.new(), customerKey(me.id)), res.json);
  });

  for (const [field, value] of [
    ["plan", "enterprise"],
    ["tier", "platinum"],
    ["status", "suspended"],
    ["subscriptions", ["otp-sms", "otp-voice"]],
    ["flairs", ["vip"]],
    ["features", { sso: true }],
  ]) {
    test(`the owner may not change the protected field ${field}: 403 forbidden`, async () => {
      const before = await getJson(h.new(), customerKey(me.id));
      const res = await h.request("PATCH", `/customer/${me.id}`, { token, body: { [field]: value } });
      assertError(res, 403, "forbidden");
      assert.deepEqual(await getJson(h.new(), customerKey(me.id)), before, "nothing changed");
    });
  }

  test("a service token may change protected fields", async () => {
    const res = await h.request("PATCH", `/customer/${me.id}`, { token: h.serviceToken, body: { plan: "enterprise" } });
    assertStatus(res, 200, "service PATCH plan");
    assert.equal(res.json.plan, "enterprise");
  });
});

describe("merge patch (RFC 7386)", () => {
  test("null removes a field, nested objects merge, arrays are replaced, unknown fields are kept", async () => {
    const { id, email } = uniqueCustomer("merge");
    const record = sampleRecord(id, email, {
      config: { locale: "en-GB", otp: { length: 6, channel: "sms" } },
      legacy: { a: 1, b: { c: 2 } },
    });
    await seedCustomer(h, ["old", "new"], record);
    const res = await h.request("PATCH", `/customer/${id}`, {
      token: h.serviceToken,
      body: { companyName: null, config: { otp: { channel: "email" } }, flairs: ["vip"], legacy: { b: { d: 3 } } },
    });
    assertStatus(res, 200, "PATCH");
    assert.ok(!Object.hasOwn(res.json, "companyName"), "companyName removed");
    assert.deepEqual(res.json.config, { locale: "en-GB", otp: { length: 6, channel: "email" } });
    assert.deepEqual(res.json.flairs, ["vip"]);
    assert.deepEqual(res.json.legacy, { a: 1, b: { c: 2, d: 3 } });
    assert.equal(res.json.name, record.name);
    for (const store of ["new", "old"]) {
      assert.deepEqual(await getJson(h.store(store), customerKey(id)), res.json, `${store} store`);
    }
  });

  test("PATCH of a missing customer: 404 customer_not_found, nothing created", async () => {
    const { id } = uniqueCustomer("patch_missing");
    assertError(await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { name: "x" } }), 404, "customer_not_found");
    assert.equal(await h.new().get(customerKey(id)), null);
    assert.equal(await h.old().get(customerKey(id)), null);
  });

  test("DELETE of a missing customer: 404 customer_not_found", async () => {
    const { id } = uniqueCustomer("delete_missing");
    assertError(await h.request("DELETE", `/customer/${id}`, { token: h.serviceToken }), 404, "customer_not_found");
  });
});

describe("ids and emails", () => {
  test("create without customerId derives cus_ + 24 hex digits of the email hash, with _2 when taken", async () => {
    const email = "Derived.Id@E2E.Example.com";
    const expected = `cus_${emailHash(email).slice(0, 24)}`;
    const first = await h.request("POST", "/customer", { token: h.serviceToken, body: { email, name: "Derived" } });
    assertStatus(first, 201, "first create");
    assert.equal(first.json.customerId, expected);

    // Free the email by moving the first customer to another one; the id stays taken.
    const moved = await h.request("PATCH", `/customer/${expected}`, { token: h.serviceToken, body: { email: "moved.away@e2e.example.com" } });
    assertStatus(moved, 200, "PATCH email away");

    const second = await h.request("POST", "/customer", { token: h.serviceToken, body: { email, name: "Derived again" } });
    assertStatus(second, 201, "second create");
    assert.equal(second.json.customerId, `${expected}_2`);
  });

  test("the email is stored trimmed (case kept) and the mapping uses the normalised hash", async () => {
    const { id } = uniqueCustomer("trim");
    const raw = `  Some.Body.${id}@E2E.Example.COM  `;
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email: raw } });
    assertStatus(res, 201, "create");
    assert.equal(res.json.email, raw.trim());
    for (const store of ["new", "old"]) {
      assert.equal(await h.store(store).get(emailKey(emailHash(raw))), id, `${store} store mapping`);
    }
    const lookup = await h.request("GET", byEmailPath(raw.trim().toLowerCase()), { token: h.serviceToken });
    assertStatus(lookup, 200, "by lower-cased email");
    assert.equal(lookup.json.customerId, id);
  });

  test("create keeps unknown fields and given timestamps", async () => {
    const { id, email } = uniqueCustomer("keep");
    const body = { customerId: id, email, createdAt: "2019-05-05T05:05:05Z", weird: { deep: [{ x: null }] }, n: 12.5 };
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body });
    assertStatus(res, 201, "create");
    assert.equal(res.json.createdAt, body.createdAt);
    assert.deepEqual(res.json.weird, body.weird);
    assert.equal(res.json.n, 12.5);
    assert.ok(res.json.updatedAt, "updatedAt set");
  });
});
