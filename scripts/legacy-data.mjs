// Deterministic generator of legacy OTP_AUTH_KV data (the OLD store).
//
// `generateLegacyData({ customers, seed })` returns the entries the OTP auth service
// could have left behind: `customers` well-formed customer records, each with its
// email mapping, plus one instance of every kind of mess the migration must survive
// (see MESSY below). The same seed always gives the same data; the only value that
// depends on the clock is the TTL entry's `expiration` (pass `now` to pin it).
//
// Entry shape (wrangler's bulk format):
//   { key, value, expiration?, metadata? }
//   value: string; expiration: absolute unix seconds; metadata: JSON-serialisable object.

import { createHash } from "node:crypto";

export const CUSTOMER_PREFIX = "customer_";
export const EMAIL_PREFIX = "email_to_customer_";

/** Lowercase hex SHA-256 of the normalised email (trimmed, lowercased). */
export function emailHash(email) {
  return sha256Hex(String(email).trim().toLowerCase());
}

/** Lowercase hex SHA-256 of a string exactly as given (no normalisation). */
export function sha256Hex(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

export const customerKey = (customerId) => CUSTOMER_PREFIX + customerId;
export const emailKey = (hash) => EMAIL_PREFIX + hash;

/** Id of the n-th generated (well-formed) customer, 1-based: cust_000001. */
export const normalCustomerId = (n) => `cust_${String(n).padStart(6, "0")}`;

/**
 * The messy legacy cases, each with a stable id. All of them live in the old store
 * only, next to the generated customers; none of their ids collide with `cust_…`.
 */
export const MESSY = Object.freeze({
  /** `customer_legacy_corrupt_json` holds a truncated JSON document. */
  corruptJson: Object.freeze({
    customerId: "legacy_corrupt_json",
    key: "customer_legacy_corrupt_json",
    value: '{"customerId":"legacy_corrupt_json","name":"Truncated Rec',
  }),
  /** A valid record with `createdAt` but no `updatedAt`; it has a normal mapping. */
  noUpdatedAt: Object.freeze({
    customerId: "legacy_no_updated_at",
    key: "customer_legacy_no_updated_at",
    email: "no.updated.at@legacy.example.com",
  }),
  /** A mapping whose customer record does not exist. */
  orphanMapping: Object.freeze({
    customerId: "legacy_missing_customer",
    email: "orphan@legacy.example.com",
    mappingKey: emailKey(emailHash("orphan@legacy.example.com")),
  }),
  /**
   * A record whose mapping was hashed from the raw, un-normalised input
   * ("  Mixed.Case@Example.COM ", untrimmed, mixed case); the mapping under the
   * normalised hash is missing. The record stores the trimmed email.
   */
  unnormalisedEmail: Object.freeze({
    customerId: "legacy_unnormalised_email",
    key: "customer_legacy_unnormalised_email",
    email: "Mixed.Case@Example.COM",
    rawEmail: "  Mixed.Case@Example.COM ",
    mappingKey: emailKey(sha256Hex("  Mixed.Case@Example.COM ")),
    correctMappingKey: emailKey(emailHash("Mixed.Case@Example.COM")),
  }),
  /** Two records with one email; the single mapping points to the first. */
  sharedEmail: Object.freeze({
    customerIds: Object.freeze(["legacy_shared_email_a", "legacy_shared_email_b"]),
    email: "shared@legacy.example.com",
    mappingKey: emailKey(emailHash("shared@legacy.example.com")),
    mappedTo: "legacy_shared_email_a",
  }),
  /** A record with fields the API does not know about, nested ones included. */
  unknownFields: Object.freeze({
    customerId: "legacy_unknown_fields",
    key: "customer_legacy_unknown_fields",
    email: "unknown.fields@legacy.example.com",
  }),
  /** A record stored with a TTL: `expiration` about 30 days after `now`. */
  withTtl: Object.freeze({
    customerId: "legacy_with_ttl",
    key: "customer_legacy_with_ttl",
    email: "with.ttl@legacy.example.com",
    ttlSeconds: 30 * 24 * 3600,
  }),
  /** A record stored with KV metadata. */
  withMetadata: Object.freeze({
    customerId: "legacy_with_metadata",
    key: "customer_legacy_with_metadata",
    email: "with.metadata@legacy.example.com",
    metadata: Object.freeze({ source: "otp-auth", v: 1 }),
  }),
});

/** mulberry32: a tiny, well-known 32-bit seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIRST_NAMES = [
  "Ada", "Alan", "Barbara", "Claude", "Dana", "Edsger", "Frances", "Grace", "Hedy",
  "Ivan", "Joan", "Ken", "Linus", "Margaret", "Niklaus", "Olga", "Radia", "Sophie",
  "Tim", "Whitfield",
];
const LAST_NAMES = [
  "Lovelace", "Turing", "Liskov", "Shannon", "Scott", "Dijkstra", "Allen", "Hopper",
  "Lamarr", "Sutherland", "Clarke", "Thompson", "Torvalds", "Hamilton", "Wirth",
  "Taussky", "Perlman", "Wilson", "Berners-Lee", "Diffie",
];
const COMPANY_WORDS = [
  "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell",
  "Cyberdyne", "Soylent", "Vandelay", "Wonka",
];
const COMPANY_SUFFIXES = ["Ltd", "GmbH", "Inc", "SAS", "BV", "Oy"];
const DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"];
const PLANS = ["free", "starter", "pro", "enterprise"];
const TIERS = ["bronze", "silver", "gold", "platinum"];
const STATUSES = ["active", "active", "active", "trial", "suspended"];
const SUBSCRIPTIONS = ["otp-sms", "otp-email", "otp-voice", "otp-whatsapp", "analytics"];
const FLAIRS = ["early-adopter", "beta-tester", "partner", "verified", "vip"];
const LOCALES = ["en-GB", "en-US", "de-DE", "fr-FR", "nl-NL", "fi-FI"];

// All timestamps fall in [BASE_TIME, BASE_TIME + TIME_SPAN), whole seconds, UTC.
const BASE_TIME = Date.UTC(2021, 0, 1);
const TIME_SPAN = 3 * 365 * 24 * 3600 * 1000;

function rfc3339(ms) {
  // 2023-04-05T06:07:08Z (second precision, like the legacy service wrote them)
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function makeRandom(seed) {
  const next = mulberry32(seed);
  const int = (n) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: (list) => list[int(list.length)],
    bool: (p = 0.5) => next() < p,
    subset: (list, max) => {
      const out = [];
      for (const item of list) if (out.length < max && next() < 0.4) out.push(item);
      return out;
    },
  };
}

function normalCustomer(n, rnd) {
  const customerId = normalCustomerId(n);
  const first = rnd.pick(FIRST_NAMES);
  const last = rnd.pick(LAST_NAMES);
  const company = `${rnd.pick(COMPANY_WORDS)} ${rnd.pick(COMPANY_SUFFIXES)}`;
  const email = `${first}.${last}.${n}@${rnd.pick(DOMAINS)}`.toLowerCase();
  const createdMs = BASE_TIME + Math.floor(rnd.next() * (TIME_SPAN / 1000)) * 1000;
  const updatedMs = createdMs + rnd.int(400 * 24 * 3600) * 1000;
  const plan = rnd.pick(PLANS);
  return {
    customerId,
    name: `${first} ${last}`,
    email,
    companyName: company,
    plan,
    tier: rnd.pick(TIERS),
    status: rnd.pick(STATUSES),
    subscriptions: rnd.subset(SUBSCRIPTIONS, 3),
    flairs: rnd.subset(FLAIRS, 2),
    displayName: rnd.bool(0.7) ? `${first} ${last[0]}.` : first,
    config: {
      locale: rnd.pick(LOCALES),
      otp: { length: rnd.pick([4, 6, 8]), channel: rnd.pick(["sms", "email", "voice"]) },
      notifications: { email: rnd.bool(), sms: rnd.bool(0.3) },
    },
    features: {
      sso: plan === "enterprise",
      rateLimitPerMinute: rnd.pick([60, 120, 600, 1200]),
      betaFlags: rnd.subset(["new-dashboard", "webhooks-v2", "passkeys"], 2),
    },
    createdAt: rfc3339(createdMs),
    updatedAt: rfc3339(updatedMs),
  };
}

function json(value) {
  return JSON.stringify(value);
}

/**
 * @param {{customers?: number, seed?: number, now?: number}} [options]
 *   customers: number of well-formed customers (each with one mapping);
 *   seed: PRNG seed; now: clock in ms for the TTL entry (default Date.now()).
 * @returns {{key: string, value: string, expiration?: number, metadata?: object}[]}
 */
export function generateLegacyData({ customers = 1000, seed = 1, now = Date.now() } = {}) {
  if (!Number.isInteger(customers) || customers < 0 || customers > 999999) {
    throw new RangeError(`customers must be an integer in 0..999999, got ${customers}`);
  }
  const rnd = makeRandom(Number(seed) >>> 0);
  const entries = [];
  const put = (key, value, extra = {}) => entries.push({ key, value, ...extra });

  for (let n = 1; n <= customers; n++) {
    const record = normalCustomer(n, rnd);
    put(customerKey(record.customerId), json(record));
    put(emailKey(emailHash(record.email)), record.customerId);
  }

  const stamp = (offsetDays) => rfc3339(BASE_TIME + offsetDays * 24 * 3600 * 1000);

  // 1. Not valid JSON.
  put(MESSY.corruptJson.key, MESSY.corruptJson.value);

  // 2. No updatedAt.
  {
    const m = MESSY.noUpdatedAt;
    put(m.key, json({ customerId: m.customerId, name: "No Updated At", email: m.email, plan: "free", createdAt: stamp(10) }));
    put(emailKey(emailHash(m.email)), m.customerId);
  }

  // 3. Orphan mapping (no customer_legacy_missing_customer anywhere).
  put(MESSY.orphanMapping.mappingKey, MESSY.orphanMapping.customerId);

  // 4. Mapping hashed from the raw, un-normalised email; the correct one is missing.
  {
    const m = MESSY.unnormalisedEmail;
    put(m.key, json({
      customerId: m.customerId,
      name: "Mixed Case",
      email: m.email,
      plan: "starter",
      status: "active",
      createdAt: stamp(20),
      updatedAt: stamp(21),
    }));
    put(m.mappingKey, m.customerId);
  }

  // 5. Two customers claiming one email; one mapping, pointing to the first.
  {
    const m = MESSY.sharedEmail;
    m.customerIds.forEach((customerId, i) => {
      put(customerKey(customerId), json({
        customerId,
        name: `Shared Email ${i === 0 ? "A" : "B"}`,
        email: m.email,
        plan: "pro",
        createdAt: stamp(30 + i),
        updatedAt: stamp(40 + i),
      }));
    });
    put(m.mappingKey, m.mappedTo);
  }

  // 6. Unknown extra fields, nested too. Values chosen to survive a JSON round trip
  //    byte for byte (no 1.0, no exponents, no duplicate keys).
  {
    const m = MESSY.unknownFields;
    put(m.key, json({
      customerId: m.customerId,
      name: "Unknown Fields",
      email: m.email,
      plan: "enterprise",
      legacyOtpState: {
        lastCodeSentAt: stamp(50),
        attempts: 3,
        channels: ["sms", "email"],
        lockout: null,
        nested: { deeper: { flag: true, ratio: 0.25, tags: ["a", "b", { c: "d" }] } },
      },
      marketingOptIn: false,
      referralCode: "REF-000042",
      score: -17,
      unicodeNote: "Zoë — ünïcödé ✓",
      emptyObject: {},
      emptyList: [],
      config: { theme: "dark", widgets: [{ id: 1, pinned: true }] },
      createdAt: stamp(50),
      updatedAt: stamp(51),
      zzLastField: "kept in order",
    }));
    put(emailKey(emailHash(m.email)), m.customerId);
  }

  // 7. A key with a TTL.
  {
    const m = MESSY.withTtl;
    put(m.key, json({ customerId: m.customerId, name: "With TTL", email: m.email, status: "trial", createdAt: stamp(60), updatedAt: stamp(61) }),
      { expiration: Math.floor(now / 1000) + m.ttlSeconds });
    put(emailKey(emailHash(m.email)), m.customerId);
  }

  // 8. A key with KV metadata.
  {
    const m = MESSY.withMetadata;
    put(m.key, json({ customerId: m.customerId, name: "With Metadata", email: m.email, createdAt: stamp(70), updatedAt: stamp(71) }),
      { metadata: { ...m.metadata } });
    put(emailKey(emailHash(m.email)), m.customerId);
  }

  return entries;
}
