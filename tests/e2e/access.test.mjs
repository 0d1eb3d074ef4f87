// Admin sign-in in workerd, through Cloudflare Access or an admin-only secret. For
// Access, a local server plays the team's key endpoint (/cdn-cgi/access/certs);
// assertions are RS256 JWTs signed here, as the Access edge signs them, and sent in
// Cf-Access-Jwt-Assertion.

import assert from "node:assert/strict";
import { generateKeyPairSync, sign } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { assertStatus, kvMigrate, startWorker } from "./harness.mjs";

const AUD = "e2e0access0application0audience0tag";
const ADMIN = "ops@example.com";

let h;
let server;
let team;
let fetches = 0;
let published = [];

function keyPair(kid) {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { kid, privateKey, jwk: { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" } };
}
const k1 = keyPair("k1");
const k2 = keyPair("k2");
const stranger = keyPair("k1");

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An application token as Access issues it. */
function assertion({ key = k1, email = ADMIN, aud = AUD, iss = team, ageSeconds = 0, lifetime = 600, kid } = {}) {
  const now = Math.floor(Date.now() / 1000) - ageSeconds;
  const header = { alg: "RS256", kid: kid ?? key.kid, typ: "JWT" };
  const payload = { aud: [aud], email, exp: now + lifetime, iat: now, nbf: now, iss, type: "app", sub: "0c5b6d9e", country: "US" };
  const signed = `${b64url(header)}.${b64url(payload)}`;
  return `${signed}.${sign("sha256", Buffer.from(signed), key.privateKey).toString("base64url")}`;
}

before(async () => {
  server = createServer((req, res) => {
    if (req.url !== "/cdn-cgi/access/certs") return res.writeHead(404).end();
    fetches += 1;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: published.map((k) => k.jwk) }));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  team = `http://127.0.0.1:${server.address().port}`;
  published = [k1];
  h = await startWorker({
    bindings: { ACCESS_TEAM_DOMAIN: team, ACCESS_AUD: AUD, ACCESS_ADMINS: `${ADMIN}, *@sre.example` },
  });
});
after(async () => {
  await h?.stop();
  server?.close();
});

const status = (jwt) => h.request("GET", "/admin/migrate/status", { headers: { "cf-access-jwt-assertion": jwt } });

test("a valid assertion of a listed admin signs in; the keys are fetched once", async () => {
  assertStatus(await status(assertion()), 200);
  assertStatus(await status(assertion({ email: "kim@sre.example" })), 200);
  const moved = await h.request("POST", "/admin/migrate/phase", {
    headers: { "cf-access-jwt-assertion": assertion() },
    body: { phase: 1, reason: "access drill" },
  });
  assertStatus(moved, 200);
  assert.equal(fetches, 1);
});

test("forged, foreign, expired and unlisted assertions are refused", async () => {
  const refused = async (jwt, code, want = 401) => {
    const res = await status(jwt);
    assertStatus(res, want);
    assert.equal(res.json.error.code, code);
    assert.ok(!res.text.includes(ADMIN), "the identity is not echoed");
  };
  await refused(assertion({ key: stranger }), "invalid_access_token");
  await refused(assertion({ aud: "another-application" }), "invalid_access_token");
  await refused(assertion({ iss: "https://elsewhere.cloudflareaccess.com" }), "invalid_access_token");
  await refused(assertion({ ageSeconds: 1200 }), "access_token_expired");
  await refused(assertion({ email: "someone@example.com" }), "forbidden", 403);
  await refused("not.a.jwt", "invalid_access_token");
});

test("the OTP service's secret no longer opens admin routes; customer routes keep it", async () => {
  const res = await h.request("GET", "/admin/migrate/status", { token: h.adminToken });
  assertStatus(res, 401);
  assert.equal(res.json.error.code, "access_required");
  const created = await h.request("POST", "/customer", { token: h.serviceToken, body: { customerId: "access_e2e" } });
  assertStatus(created, 201);
});

test("a rotated key is fetched when an assertion first names it", async () => {
  const before = fetches;
  published = [k2, k1];
  // An unknown key forces a fetch at most every 5 s (the native tests show the limit).
  await new Promise((resolve) => setTimeout(resolve, 5_200));
  assertStatus(await status(assertion({ key: k2 })), 200);
  assertStatus(await status(assertion({ key: k1 })), 200);
  assert.equal(fetches - before, 1);
});

test("with ADMIN_JWT_SECRET the CLI signs admin tokens with it; the OTP secret's are refused", async () => {
  const adminSecret = "e2e-admin-only-secret-0123456789abcdef";
  const worker = await startWorker({ bindings: { ADMIN_JWT_SECRET: adminSecret } });
  try {
    const signed = await kvMigrate(worker, ["status"], { env: { ADMIN_JWT_SECRET: adminSecret } });
    assert.equal(signed.code, 0, signed.stderr);
    assert.match(signed.stdout, /^phase 0/m);
    const shared = await kvMigrate(worker, ["status"]);
    assert.equal(shared.code, 4, shared.stderr);
    assert.match(shared.stderr, /ADMIN_JWT_SECRET/);
    const ready = await worker.request("GET", "/admin/migrate/ready", {
      headers: { authorization: `Bearer ${(await kvMigrate(worker, ["token"], { env: { ADMIN_JWT_SECRET: adminSecret } })).stdout.trim()}` },
    });
    assertStatus(ready, 200);
    assert.deepEqual(ready.json.adminSignIn, { method: "admin-secret", sharesOtpSecret: false });
  } finally {
    await worker.stop();
  }
});
