// A customer's object checks its delete once copies decided on reads from before it have
// landed (docs/design.md §12, "Deletes are checked"), in workerd: the Durable Object's
// alarm puts the tombstone back over a deleted record a stale copy brought back.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertStatus, customerKey, emailKey, emailHash, startWorker } from "./harness.mjs";

const ID = "deleted-then-copied";
const EMAIL = "deleted-then-copied@legacy.example.com";
const RECORD = JSON.stringify({ customerId: ID, email: EMAIL, name: "Legacy", updatedAt: "2024-01-01T00:00:00Z" });

let h;
before(async () => {
  // A one-second window: the object checks its delete two seconds after it.
  h = await startWorker({ bindings: { KV_CONSISTENCY_WINDOW_SECONDS: "1" } });
  await h.reset();
  for (const phase of [1, 2, 3]) await h.setPhase(phase);
  await h.old().put(customerKey(ID), RECORD);
  await h.old().put(emailKey(emailHash(EMAIL)), ID);
});
after(async () => {
  await h?.stop();
});

const isTombstone = (text) => text !== null && JSON.parse(text).__tombstone !== undefined;

describe("a delete's check", () => {
  test("puts the tombstone back over a record a stale copy brought back", async () => {
    const deleted = await h.request("DELETE", `/customer/${ID}`, { token: h.serviceToken });
    assertStatus(deleted, 200, "delete");
    assert.ok(isTombstone(await h.new().get(customerKey(ID))), "the delete leaves a tombstone");

    // What a backfill copy decided on stale reads writes: the legacy record.
    await h.new().put(customerKey(ID), RECORD);
    const served = await h.request("GET", `/customer/${ID}`, { token: h.serviceToken });
    assertStatus(served, 200, "the copy is served until the check");

    const deadline = Date.now() + 15_000;
    while (!isTombstone(await h.new().get(customerKey(ID)))) {
      assert.ok(Date.now() < deadline, "the object's alarm restored the tombstone within 15 s");
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const gone = await h.request("GET", `/customer/${ID}`, { token: h.serviceToken });
    assertStatus(gone, 404, "read after the check");
    assert.equal(await h.old().get(customerKey(ID)), null, "the old store keeps the delete");
  });
});
