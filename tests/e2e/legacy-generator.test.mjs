// The deterministic legacy data generator (scripts/legacy-data.mjs). Needs no worker.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  CUSTOMER_PREFIX,
  EMAIL_PREFIX,
  MESSY,
  customerKey,
  emailHash,
  generateLegacyData,
  normalCustomerId,
} from "../../scripts/legacy-data.mjs";

describe("legacy data generator", () => {
  const NOW = Date.UTC(2026, 0, 1);

  test("the same seed gives the same data; another seed gives other data", () => {
    const a = generateLegacyData({ customers: 50, seed: 7, now: NOW });
    const b = generateLegacyData({ customers: 50, seed: 7, now: NOW });
    const c = generateLegacyData({ customers: 50, seed: 8, now: NOW });
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test("every generated customer is valid JSON with its normalised-email mapping", () => {
    const entries = generateLegacyData({ customers: 100, seed: 3, now: NOW });
    const byKey = new Map(entries.map((e) => [e.key, e]));
    assert.equal(byKey.size, entries.length, "keys are unique");
    for (let n = 1; n <= 100; n++) {
      const id = normalCustomerId(n);
      const record = JSON.parse(byKey.get(CUSTOMER_PREFIX + id).value);
      assert.equal(record.customerId, id);
      for (const field of ["name", "email", "companyName", "plan", "tier", "status", "displayName", "createdAt", "updatedAt"]) {
        assert.ok(record[field] !== undefined, `${id}.${field}`);
      }
      assert.ok(Array.isArray(record.subscriptions) && Array.isArray(record.flairs));
      assert.match(record.updatedAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
      assert.equal(byKey.get(EMAIL_PREFIX + emailHash(record.email)).value, id);
    }
  });

  test("every messy case is present as documented", () => {
    const entries = generateLegacyData({ customers: 5, seed: 1, now: NOW });
    const get = (key) => entries.find((e) => e.key === key);
    assert.throws(() => JSON.parse(get(MESSY.corruptJson.key).value));
    assert.equal(JSON.parse(get(MESSY.noUpdatedAt.key).value).updatedAt, undefined);
    assert.equal(get(MESSY.orphanMapping.mappingKey).value, MESSY.orphanMapping.customerId);
    assert.equal(get(customerKey(MESSY.orphanMapping.customerId)), undefined);
    assert.equal(get(MESSY.unnormalisedEmail.mappingKey).value, MESSY.unnormalisedEmail.customerId);
    assert.equal(get(MESSY.unnormalisedEmail.correctMappingKey), undefined);
    assert.notEqual(MESSY.unnormalisedEmail.mappingKey, MESSY.unnormalisedEmail.correctMappingKey);
    for (const id of MESSY.sharedEmail.customerIds) {
      assert.equal(JSON.parse(get(customerKey(id)).value).email, MESSY.sharedEmail.email);
    }
    assert.equal(get(MESSY.sharedEmail.mappingKey).value, MESSY.sharedEmail.mappedTo);
    assert.ok(JSON.parse(get(MESSY.unknownFields.key).value).legacyOtpState.nested.deeper);
    assert.equal(get(MESSY.withTtl.key).expiration, Math.floor(NOW / 1000) + 30 * 24 * 3600);
    assert.deepEqual(get(MESSY.withMetadata.key).metadata, { source: "otp-auth", v: 1 });
    assert.equal(entries.filter((e) => e.expiration !== undefined).length, 1);
    assert.equal(entries.filter((e) => e.metadata !== undefined).length, 1);
  });
});

