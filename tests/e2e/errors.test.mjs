// Error answers: exact status and code for bad input, bad tokens, wrong roles, unknown
// routes, conflicts and corrupt stored data (docs/http-api.md, "Error codes").

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  JWT_SECRET,
  assertError,
  assertStatus,
  customerKey,
  emailHash,
  emailKey,
  mintToken,
  sampleRecord,
  seedCustomer,
  startWorker,
  uniqueCustomer,
} from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
  await h.reset();
  await h.setPhase(0);
});
after(async () => {
  await h?.stop();
});

const now = () => Math.floor(Date.now() / 1000);

/** A body of `sent` bytes, 64 KiB at a time, whose end never comes. */
function stallingBody(sent, chunk = 64 * 1024) {
  let produced = 0;
  const stream = new ReadableStream({
    pull(controller) {
      if (produced >= sent) return new Promise(() => {});
      produced += chunk;
      controller.enqueue(new Uint8Array(chunk).fill(0x61));
    },
  });
  return { stream };
}

/** Sends a streamed body, which fetch sends chunked (no Content-Length). */
async function sendChunked(method, path, stream, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await h.mf.dispatchFetch(`http://localhost${path}`, { method, body: stream, duplex: "half", headers });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

describe("input validation", () => {
  test("malformed JSON body: 400 invalid_json", async () => {
    const res = await h.request("POST", "/customer", { token: h.serviceToken, rawBody: '{"customerId": "x", ' });
    assertError(res, 400, "invalid_json");
  });

  test("PATCH with malformed JSON: 400 invalid_json", async () => {
    const { id, email } = uniqueCustomer("patch_badjson");
    await seedCustomer(h, ["old"], sampleRecord(id, email));
    const res = await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, rawBody: "not json at all" });
    assertError(res, 400, "invalid_json");
  });

  test('wrong type for customerId ({"customerId": 5}): 400 invalid_body', async () => {
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: 5 } });
    assertError(res, 400, "invalid_body");
  });

  test('wrong type for name with a valid id ({"name": 3}): 400 invalid_body', async () => {
    const { id, email } = uniqueCustomer("badname");
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email, name: 3 } });
    assertError(res, 400, "invalid_body");
    assert.equal(await h.old().get(customerKey(id)), null, "nothing is stored");
  });

  test("a JSON body that is not an object: 400 invalid_body", async () => {
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body: ["customerId", "x"] });
    assertError(res, 400, "invalid_body");
  });

  test("create without customerId and without email: 400 invalid_body", async () => {
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body: { name: "Nobody" } });
    assertError(res, 400, "invalid_body");
  });

  test("PATCH with a wrong type (subscriptions: \"x\"): 400 invalid_body", async () => {
    const { id, email } = uniqueCustomer("patch_badtype");
    await seedCustomer(h, ["old"], sampleRecord(id, email));
    const res = await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { subscriptions: "x" } });
    assertError(res, 400, "invalid_body");
  });

  test("PATCH that changes customerId: 400", async () => {
    const { id, email } = uniqueCustomer("patch_id");
    await seedCustomer(h, ["old"], sampleRecord(id, email));
    const res = await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { customerId: `${id}_other` } });
    assertStatus(res, 400, "PATCH customerId");
  });

  test("invalid id in the path (a control character): 400 invalid_customer_id", async () => {
    assertError(await h.request("GET", "/customer/bad%0Aid", { token: h.serviceToken }), 400, "invalid_customer_id", "GET");
    assertError(
      await h.request("PATCH", "/customer/bad%0Aid", { token: h.serviceToken, body: { name: "x" } }),
      400,
      "invalid_customer_id",
      "PATCH",
    );
    assertError(await h.request("DELETE", "/customer/bad%0Aid", { token: h.serviceToken }), 400, "invalid_customer_id", "DELETE");
  });

  test("invalid ids in the path (471 bytes, DEL): 400 invalid_customer_id", async () => {
    for (const id of ["a".repeat(471), "%7F"]) {
      assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 400, "invalid_customer_id", id);
    }
  });

  test("a legacy id outside the alphabet is an id (404 when absent, never repeated)", async () => {
    for (const id of ["bad%20id", "dot.id", "%C3%A9t%C3%A9", "ann%40example.com"]) {
      const res = await h.request("GET", `/customer/${id}`, { token: h.serviceToken });
      assertError(res, 404, "customer_not_found", id);
      assert.ok(!JSON.stringify(res.json).includes(decodeURIComponent(id)), `the error repeats ${id}`);
    }
  });

  test("an id of exactly 128 chars is valid (404 when absent)", async () => {
    const res = await h.request("GET", `/customer/${"a".repeat(128)}`, { token: h.serviceToken });
    assertError(res, 404, "customer_not_found");
  });

  test("invalid customerId in the body: 400 invalid_customer_id", async () => {
    for (const customerId of ["bad id", "", "x".repeat(129), "slash/id"]) {
      const res = await h.request("POST", "/customer", {
        token: h.serviceToken,
        body: { customerId, email: "valid.body.id@e2e.example.com" },
      });
      assertError(res, 400, "invalid_customer_id", JSON.stringify(customerId));
    }
  });

  test("invalid email: 400 invalid_email (create, patch, ensure, by-email)", async () => {
    const { id, email } = uniqueCustomer("bademail");
    for (const bad of ["not-an-email", "", "   ", "a@", "@b.example", `${"x".repeat(250)}@e2e.example.com`]) {
      const res = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email: bad } });
      assertError(res, 400, "invalid_email", `create with ${JSON.stringify(bad)}`);
    }
    await seedCustomer(h, ["old"], sampleRecord(id, email));
    assertError(
      await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { email: "nope" } }),
      400,
      "invalid_email",
      "patch",
    );
    assertError(
      await h.request("POST", "/customer/ensure", { token: h.serviceToken, body: { email: "nope" } }),
      400,
      "invalid_email",
      "ensure",
    );
    assertError(
      await h.request("GET", "/customer/by-email/not-an-email", { token: h.serviceToken }),
      400,
      "invalid_email",
      "by-email",
    );
  });

  test("body over 64 KiB: 413 payload_too_large", async () => {
    const { id, email } = uniqueCustomer("big");
    const rawBody = JSON.stringify({ customerId: id, email, name: "x".repeat(70_000) });
    assert.ok(rawBody.length > 65_536);
    assertError(await h.request("POST", "/customer", { token: h.serviceToken, rawBody }), 413, "payload_too_large");
    assert.equal(await h.old().get(customerKey(id)), null, "nothing is stored");
  });

  test("a body of exactly 65,536 bytes is accepted", async () => {
    const { id, email } = uniqueCustomer("exact64k");
    const shell = JSON.stringify({ customerId: id, email, notes: "" });
    const rawBody = JSON.stringify({ customerId: id, email, notes: "y".repeat(65_536 - shell.length) });
    assert.equal(Buffer.byteLength(rawBody), 65_536);
    assertStatus(await h.request("POST", "/customer", { token: h.serviceToken, rawBody }), 201, "POST 65,536 bytes");
  });

  // A chunked body (no Content-Length) is read as a stream and dropped at the limit:
  // before, the worker buffered all of it (100 MiB took workerd from 76 to 374 MB). This
  // one sends 192 KiB and then never ends, so only a worker that stops reading at the
  // limit answers (the timeout fails the test otherwise). It sends little and then
  // pauses: a client still writing when the refused connection is reset sees its write
  // fail (ECONNRESET) instead of the answer.
  test("a chunked body over the limit that never ends: 413 before authentication", { timeout: 60_000 }, async () => {
    const body = stallingBody(3 * 64 * 1024);
    const started = Date.now();
    const res = await sendChunked("POST", "/customer", body.stream);
    assertError(res, 413, "payload_too_large");
    assert.ok(Date.now() - started < 10_000, "answered quickly");
    assertStatus(await h.request("GET", "/health"), 200, "the worker answers afterwards");
  });

  test("a chunked body under the limit is read whole", async () => {
    const { id, email } = uniqueCustomer("chunked");
    const json = new TextEncoder().encode(JSON.stringify({ customerId: id, email, notes: "z".repeat(60_000) }));
    const stream = new ReadableStream({
      start(controller) {
        // In pieces, as a client streaming it would send them.
        for (let at = 0; at < json.length; at += 7_000) controller.enqueue(json.slice(at, at + 7_000));
        controller.close();
      },
    });
    const res = await sendChunked("POST", "/customer", stream, h.serviceToken);
    assertStatus(res, 201, "chunked create");
    assert.equal(JSON.parse(await h.old().get(customerKey(id))).notes.length, 60_000);
  });
});

describe("routing", () => {
  test("unknown route: 404 route_not_found", async () => {
    assertError(await h.request("GET", "/nope", { token: h.adminToken }), 404, "route_not_found", "/nope");
    assertError(await h.request("GET", "/customer/a/b", { token: h.adminToken }), 404, "route_not_found", "/customer/a/b");
    assertError(await h.request("GET", "/admin/migrate/nope", { token: h.adminToken }), 404, "route_not_found", "/admin/migrate/nope");
  });

  test("wrong method (PUT /customer/x): 405 method_not_allowed with an Allow header", async () => {
    const res = await h.request("PUT", "/customer/x", { token: h.adminToken, body: { name: "x" } });
    assertError(res, 405, "method_not_allowed");
    const allow = res.headers.get("allow") ?? "";
    for (const method of ["GET", "PATCH", "DELETE"]) {
      assert.ok(allow.toUpperCase().includes(method), `Allow header "${allow}" should list ${method}`);
    }
  });

  test("wrong method on /health and /customer: 405 method_not_allowed", async () => {
    assertError(await h.request("POST", "/health", { token: h.adminToken }), 405, "method_not_allowed", "POST /health");
    assertError(await h.request("GET", "/customer", { token: h.adminToken }), 405, "method_not_allowed", "GET /customer");
    assertError(await h.request("GET", "/admin/migrate/phase", { token: h.adminToken }), 405, "method_not_allowed", "GET /admin/migrate/phase");
  });

  test("/health needs no token and reveals nothing private", async () => {
    const res = await h.request("GET", "/health");
    assertStatus(res, 200, "GET /health");
    assert.deepEqual(res.json, { status: "ok", phase: 0, phaseName: "legacy" });
  });
});

describe("authentication", () => {
  const path = "/customer/auth_target";

  test("no Authorization header: 401 missing_token", async () => {
    assertError(await h.request("GET", path), 401, "missing_token");
  });

  test("Authorization without Bearer: 401 missing_token", async () => {
    const res = await h.request("GET", path, { headers: { authorization: "Basic dXNlcjpwYXNz" } });
    assertError(res, 401, "missing_token");
  });

  test("expired token: 401 token_expired", async () => {
    const token = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", exp: now() - 3600 });
    assertError(await h.request("GET", path, { token }), 401, "token_expired");
  });

  test("forged signature: 401 invalid_token", async () => {
    const token = mintToken({ secret: "another-secret-of-sufficient-length-000000", sub: "e2e-admin", role: "admin" });
    assertError(await h.request("GET", path, { token }), 401, "invalid_token");
  });

  test("tampered payload (role raised to admin after signing): 401 invalid_token", async () => {
    const good = mintToken({ secret: JWT_SECRET, sub: "cust_tamper", role: "customer" });
    const [header, , signature] = good.split(".");
    const payload = Buffer.from(JSON.stringify({ sub: "cust_tamper", role: "admin", exp: now() + 600 })).toString("base64url");
    assertError(await h.request("GET", path, { token: `${header}.${payload}.${signature}` }), 401, "invalid_token");
  });

  test('alg swapped to "none": 401 invalid_token', async () => {
    const token = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", alg: "none" });
    assertError(await h.request("GET", path, { token }), 401, "invalid_token");
  });

  test('alg "none" header with a valid HS256 signature: 401 invalid_token', async () => {
    const signed = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin" });
    const unsigned = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", alg: "none" });
    const [header] = unsigned.split(".");
    const [, payload, signature] = signed.split(".");
    assertError(await h.request("GET", path, { token: `${header}.${payload}.${signature}` }), 401, "invalid_token");
  });

  test("HS512 token signed with the right secret: 401 invalid_token", async () => {
    const token = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", alg: "HS512" });
    assertError(await h.request("GET", path, { token }), 401, "invalid_token");
  });

  test("token without exp: 401 invalid_token", async () => {
    const token = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", exp: null });
    assertError(await h.request("GET", path, { token }), 401, "invalid_token");
  });

  test("a token that never expires, or outlives its role's maximum: 401 invalid_token", async () => {
    const forever = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", exp: 2 ** 53 - 1, claims: { iat: undefined } });
    assertError(await h.request("GET", path, { token: forever }), 401, "invalid_token");
    const day = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "admin", ttl: 86_400 });
    assertError(await h.request("GET", path, { token: day }), 401, "invalid_token");
  });

  test("token without sub: 401 invalid_token", async () => {
    const token = mintToken({ secret: JWT_SECRET, sub: null, role: "admin" });
    assertError(await h.request("GET", path, { token }), 401, "invalid_token");
  });

  test("token with an unknown role: 401 invalid_token", async () => {
    const token = mintToken({ secret: JWT_SECRET, sub: "e2e-admin", role: "superuser" });
    assertError(await h.request("GET", path, { token }), 401, "invalid_token");
  });

  test("malformed tokens: 401 invalid_token", async () => {
    for (const token of ["abc", "a.b", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.%%%.x"]) {
      assertError(await h.request("GET", path, { token }), 401, "invalid_token", token);
    }
  });

  test("a token without role acts as a customer", async () => {
    const { id, email } = uniqueCustomer("norole");
    await seedCustomer(h, ["old"], sampleRecord(id, email));
    const token = mintToken({ secret: JWT_SECRET, sub: id, role: null });
    assertStatus(await h.request("GET", "/customer/me", { token }), 200, "GET /customer/me");
    assertError(await h.request("POST", "/customer", { token, body: { email: "x@e2e.example.com" } }), 403, "forbidden", "POST /customer");
  });
});

describe("authorisation", () => {
  test("customer role calling POST /customer, /customer/ensure, DELETE: 403 forbidden", async () => {
    const { id, email } = uniqueCustomer("cust_role");
    await seedCustomer(h, ["old"], sampleRecord(id, email));
    const token = h.token({ role: "customer", sub: id });
    assertError(
      await h.request("POST", "/customer", { token, body: { customerId: `${id}_new`, email: `new.${email}` } }),
      403,
      "forbidden",
      "POST /customer",
    );
    assertError(
      await h.request("POST", "/customer/ensure", { token, body: { email: `ensure.${email}` } }),
      403,
      "forbidden",
      "POST /customer/ensure",
    );
    assertError(await h.request("DELETE", `/customer/${id}`, { token }), 403, "forbidden", "DELETE own record");
    assert.ok(await h.old().get(customerKey(id)), "the record is still there");
  });

  test("customer and service roles calling admin routes: 403 forbidden", async () => {
    for (const token of [h.token({ role: "customer", sub: "cust_x" }), h.serviceToken]) {
      assertError(await h.request("GET", "/admin/migrate/status", { token }), 403, "forbidden", "GET /admin/migrate/status");
      assertError(
        await h.request("POST", "/admin/migrate/phase", { token, body: { phase: 1 } }),
        403,
        "forbidden",
        "POST /admin/migrate/phase",
      );
    }
    assert.equal((await h.request("GET", "/health")).json.phase, 0, "the phase did not change");
  });
});

describe("conflicts", () => {
  test("create with a taken id: 409 customer_exists", async () => {
    const { id, email } = uniqueCustomer("taken_id");
    assertStatus(await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email } }), 201, "first");
    const res = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email: `other.${email}` } });
    assertError(res, 409, "customer_exists");
    assert.equal(await h.old().get(emailKey(emailHash(`other.${email}`))), null, "no mapping for the refused email");
  });

  test("create with a taken email (any case, padded): 409 email_taken", async () => {
    const { id, email } = uniqueCustomer("taken_email");
    assertStatus(await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: id, email } }), 201, "first");
    const res = await h.request("POST", "/customer", {
      token: h.serviceToken,
      body: { customerId: `${id}_b`, email: ` ${email.toUpperCase()} ` },
    });
    assertError(res, 409, "email_taken");
    assert.equal(await h.old().get(customerKey(`${id}_b`)), null, "the second record is not stored");
    assert.equal(await h.old().get(emailKey(emailHash(email))), id, "the mapping still points to the first");
  });

  test("PATCH to an email another customer holds: 409 email_taken", async () => {
    const a = uniqueCustomer("patch_taken_a");
    const b = uniqueCustomer("patch_taken_b");
    await seedCustomer(h, ["old"], sampleRecord(a.id, a.email));
    await seedCustomer(h, ["old"], sampleRecord(b.id, b.email));
    const res = await h.request("PATCH", `/customer/${b.id}`, { token: h.serviceToken, body: { email: a.email } });
    assertError(res, 409, "email_taken");
    assert.equal(await h.old().get(emailKey(emailHash(a.email))), a.id);
    assert.equal(await h.old().get(emailKey(emailHash(b.email))), b.id);
  });
});

describe("corrupt stored data", () => {
  test("phase 0: corrupt JSON in the old store gives 500 corrupt_record by id (404 by email) and the worker keeps serving", async () => {
    const { id, email } = uniqueCustomer("corrupt");
    await h.old().put(customerKey(id), '{"customerId":"' + id + '","name":"trunc');
    await h.old().put(emailKey(emailHash(email)), id);
    assertError(await h.request("GET", `/customer/${id}`, { token: h.serviceToken }), 500, "corrupt_record", "by id");
    // By email, a corrupt record cannot prove that it holds the email: not found.
    assertError(
      await h.request("GET", `/customer/by-email/${encodeURIComponent(email)}`, { token: h.serviceToken }),
      404,
      "customer_not_found",
      "by email",
    );
    assertError(
      await h.request("PATCH", `/customer/${id}`, { token: h.serviceToken, body: { name: "x" } }),
      500,
      "corrupt_record",
      "PATCH",
    );

    assertStatus(await h.request("GET", "/health"), 200, "health after corrupt read");
    const good = uniqueCustomer("after_corrupt");
    await seedCustomer(h, ["old"], sampleRecord(good.id, good.email));
    assertStatus(await h.request("GET", `/customer/${good.id}`, { token: h.serviceToken }), 200, "a good record after a corrupt one");
  });

  test("phase 0: stored JSON that is not a customer record (array, wrong customerId type) gives 500 corrupt_record", async () => {
    const a = uniqueCustomer("corrupt_array");
    await h.old().put(customerKey(a.id), "[1,2,3]");
    assertError(await h.request("GET", `/customer/${a.id}`, { token: h.serviceToken }), 500, "corrupt_record", "array");
    const b = uniqueCustomer("corrupt_idtype");
    await h.old().put(customerKey(b.id), '{"customerId": 42}');
    assertError(await h.request("GET", `/customer/${b.id}`, { token: h.serviceToken }), 500, "corrupt_record", "numeric customerId");
    assertStatus(await h.request("GET", "/health"), 200, "health");
  });
});

describe("configuration", () => {
  test("a missing KV binding: 500 internal_error in the JSON shape, naming no secret", async () => {
    const broken = await startWorker({ kvNamespaces: ["OTP_AUTH_KV"] });
    try {
      const res = await broken.request("GET", "/customer/me", { token: broken.serviceToken });
      assertError(res, 500, "internal_error");
      assert.equal(res.json.error.message, "the worker is misconfigured");
      assert.equal(res.headers.get("content-type"), "application/json");
    } finally {
      await broken.stop();
    }
  });
});
