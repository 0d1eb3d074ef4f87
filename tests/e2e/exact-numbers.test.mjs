// Numbers keep their text through the compiled worker: a legacy record's numbers —
// integers past 2^64, decimals with more digits than a double holds, exponents in any
// spelling, -0 — come back from a read, and stay in both stores after a write of another
// field, byte for byte. Answers are compared as text: JSON.parse would round them.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertStatus, customerKey, emailHash, emailKey, startWorker, uniqueCustomer } from "./harness.mjs";

const NUMBERS =
  '"big":12345678901234567890123,"past64":18446744073709551616,"digits":0.30000000000000000444,' +
  '"e":1e2,"E":1E+2,"negZero":-0,"small":0.1e-5,"one":1.0,"ones":1.00,' +
  '"nested":{"list":[1e2,-12.5E-3,-9223372036854775809,1e400]}';
const METADATA = { v: 1, f: 1.5 };

/** `text` with the time a write stamps blanked. */
const unstamped = (text) => text.replace(/"(updatedAt|createdAt)":"[^"]*"/g, '"$1":"*"');

describe("numbers are kept as their text", () => {
  let h;
  before(async () => {
    h = await startWorker();
    await h.reset();
  });
  after(async () => {
    await h?.stop();
  });

  for (const phase of [0, 2, 4]) {
    test(`phase ${phase}: read, patch and create keep every number's text`, async () => {
      await h.setPhase(phase);
      const { id, email } = uniqueCustomer(`numbers_${phase}`);
      const raw = `{"customerId":"${id}","email":"${email}",${NUMBERS},"updatedAt":"2020-01-02T00:00:00Z"}`;
      await h.old().put(customerKey(id), raw, { metadata: METADATA });
      await h.old().put(emailKey(emailHash(email)), id);

      const byId = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assertStatus(byId, 200, "GET by id");
      assert.equal(byId.text, raw, "GET by id answers the stored text");
      const byEmail = await h.request("GET", `/customer/by-email/${encodeURIComponent(email)}`, {
        token: h.serviceToken,
      });
      assertStatus(byEmail, 200, "GET by email");
      assert.equal(byEmail.text, raw, "GET by email answers the stored text");

      const patched = await h.request("PATCH", `/customer/${id}`, {
        token: h.serviceToken,
        rawBody: '{"name":"Patched","m":1E+2}',
      });
      assertStatus(patched, 200, "PATCH");
      const expected = unstamped(`${raw.slice(0, -1)},"name":"Patched","m":1E+2}`);
      assert.equal(unstamped(patched.text), expected, "PATCH answers the numbers' text");
      let written = 0;
      for (const store of ["old", "new"]) {
        const { value, metadata } = await h.store(store).getWithMetadata(customerKey(id));
        // A store the phase does not write keeps the seed (or never had the key).
        if (value === null || value === raw) continue;
        written += 1;
        assert.equal(unstamped(value), expected, `the ${store} store holds the numbers' text`);
        assert.deepEqual(metadata, METADATA, `the ${store} store keeps the record's metadata`);
      }
      assert.ok(written > 0, "the patch was written");
      const reread = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assert.equal(unstamped(reread.text), expected, "a read after the patch answers the numbers' text");

      const created = uniqueCustomer(`numbers_created_${phase}`);
      const body = `{"email":"${created.email}",${NUMBERS},"customerId":"${created.id}"}`;
      const answer = await h.request("POST", "/customer", { token: h.serviceToken, rawBody: body });
      assertStatus(answer, 201, "POST");
      const createdExpected = `${body.slice(0, -1)},"createdAt":"*","updatedAt":"*"}`;
      assert.equal(unstamped(answer.text), createdExpected, "POST answers the numbers' text");
      for (const store of ["old", "new"]) {
        const value = await h.store(store).get(customerKey(created.id));
        if (value !== null) assert.equal(unstamped(value), createdExpected, `the ${store} store`);
      }
    });
  }
});
