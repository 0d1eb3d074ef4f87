// Legacy ids outside the new ids' alphabet, in workerd (docs/design.md §2, "Customer
// ids"): reached percent-encoded in the path, by their own tokens and by email, written
// in the phases that write both stores; new customers still get the alphabet.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, assertStatus, customerKey, emailHash, emailKey, startWorker } from "./harness.mjs";

const ODD = [
  { id: "ann@example.com", email: "odd0@legacy.example.com" },
  { id: "a/b c", email: "odd1@legacy.example.com" },
  { id: "josé_ñ", email: "odd2@legacy.example.com" },
  { id: "me", email: "odd3@legacy.example.com" },
];
// `me` is a route's word, so its id is spelled out percent-encoded.
const path = ({ id }) => `/customer/${id === "me" ? "%6De" : encodeURIComponent(id)}`;

let h;
before(async () => {
  h = await startWorker();
  await h.reset();
  await h.setPhase(0);
  for (const { id, email } of ODD) {
    const record = { customerId: id, email, name: `Odd ${id}`, updatedAt: "2024-01-01T00:00:00Z" };
    await h.old().put(customerKey(id), JSON.stringify(record));
    await h.old().put(emailKey(emailHash(email)), id);
  }
});
after(async () => {
  await h?.stop();
});

describe("legacy ids outside the alphabet", () => {
  test("served by id, by their own token and by email in phase 0", async () => {
    for (const customer of ODD) {
      const byId = await h.request("GET", path(customer), { token: h.serviceToken });
      assertStatus(byId, 200, customer.id);
      assert.equal(byId.json.customerId, customer.id);
      const own = h.token({ role: "customer", sub: customer.id });
      const me = await h.request("GET", "/customer/me", { token: own });
      assertStatus(me, 200, `${customer.id} /customer/me`);
      assert.equal(me.json.customerId, customer.id);
      const byEmail = await h.request("GET", `/customer/by-email/${encodeURIComponent(customer.email)}`, {
        token: h.serviceToken,
      });
      assert.equal(byEmail.json.customerId, customer.id);
    }
  });

  test("written to both stores in phase 2 and read back", async () => {
    await h.setPhase(1);
    await h.setPhase(2);
    for (const customer of ODD) {
      const patched = await h.request("PATCH", path(customer), {
        token: h.serviceToken,
        body: { name: `Renamed ${customer.id}` },
      });
      assertStatus(patched, 200, customer.id);
      for (const store of [h.old(), h.new()]) {
        const stored = JSON.parse(await store.get(customerKey(customer.id)));
        assert.equal(stored.name, `Renamed ${customer.id}`);
      }
      const read = await h.request("GET", path(customer), { token: h.serviceToken });
      assert.equal(read.json.name, `Renamed ${customer.id}`);
    }
  });

  test("new customers still get the alphabet", async () => {
    const res = await h.request("POST", "/customer", {
      token: h.serviceToken,
      body: { customerId: "new@example.com", email: "new@e2e.example.com" },
    });
    assertError(res, 400, "invalid_customer_id", "create");
  });
});
