#!/usr/bin/env node
// Mints a JWT for local development, signed with JWT_SECRET (HS256).
//
// Usage: node scripts/dev-token.mjs [--role customer|service|admin] [--sub ID] [--ttl SECONDS]
//   defaults: --role admin --sub dev-admin --ttl 3600
// The secret comes from the JWT_SECRET environment variable, else from a
// `JWT_SECRET=...` line in .dev.vars at the repository root. Prints the token only.
//
// The module also exports mintToken(), which the end-to-end tests use to build valid,
// expired, unsigned and otherwise broken tokens.

import { createHmac } from "node:crypto";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const HMAC_HASH = { HS256: "sha256", HS384: "sha384", HS512: "sha512" };

const base64url = (input) => Buffer.from(input).toString("base64url");

/**
 * Builds a compact JWS.
 *
 * @param {object} options
 * @param {string} options.secret   HMAC key.
 * @param {string} [options.sub]    `sub` claim; omitted when null/undefined.
 * @param {string|null} [options.role="customer"]  `role` claim; null omits it.
 * @param {number} [options.ttl=3600]  lifetime in seconds, used when `exp` is undefined.
 * @param {number|null} [options.exp]  absolute `exp` (unix seconds); null omits the claim.
 * @param {string} [options.alg="HS256"]  header `alg`. HS256/HS384/HS512 are really
 *   signed with that hash; "none" gives an empty signature; anything else is signed with
 *   HS256 but keeps the header as given.
 * @param {object} [options.extraHeader]  merged into the header (may override `typ`/`alg`).
 * @param {object} [options.claims]  extra claims merged into the payload last.
 * @param {number} [options.now]  clock in unix seconds (default: now).
 * @returns {string}
 */
export function mintToken({
  secret,
  sub,
  role = "customer",
  ttl = 3600,
  exp,
  alg = "HS256",
  extraHeader = {},
  claims = {},
  now = Math.floor(Date.now() / 1000),
} = {}) {
  if (typeof secret !== "string" || secret.length === 0) {
    throw new Error("mintToken: a non-empty secret is required");
  }
  const header = { alg, typ: "JWT", ...extraHeader };
  const payload = { iat: now };
  if (sub !== undefined && sub !== null) payload.sub = sub;
  if (role !== null && role !== undefined) payload.role = role;
  if (exp === undefined) payload.exp = now + ttl;
  else if (exp !== null) payload.exp = exp;
  Object.assign(payload, claims);

  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(payload))}`;
  if (String(alg).toLowerCase() === "none") return `${signingInput}.`;
  const hash = HMAC_HASH[alg] ?? "sha256";
  const signature = createHmac(hash, secret).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}

/** Reads JWT_SECRET from the environment, else from `.dev.vars` in `root`. */
export function loadSecret(root = fileURLToPath(new URL("..", import.meta.url))) {
  if (process.env.JWT_SECRET) return process.env.JWT_SECRET;
  const devVars = join(root, ".dev.vars");
  if (existsSync(devVars)) {
    for (const line of readFileSync(devVars, "utf8").split(/\r?\n/)) {
      const match = /^\s*(?:export\s+)?JWT_SECRET\s*=\s*(.*?)\s*$/.exec(line);
      if (!match) continue;
      let value = match[1];
      if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
      if (value) return value;
    }
  }
  return null;
}

function main() {
  const fail = (message, code = 2) => {
    console.error(`dev-token: ${message}`);
    process.exit(code);
  };
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        role: { type: "string", default: "admin" },
        sub: { type: "string", default: "dev-admin" },
        ttl: { type: "string", default: "3600" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    fail(err.message);
  }
  if (values.help) {
    console.error("usage: node scripts/dev-token.mjs [--role customer|service|admin] [--sub ID] [--ttl SECONDS]");
    process.exit(0);
  }
  if (!["customer", "service", "admin"].includes(values.role)) {
    fail(`--role must be customer, service or admin, got '${values.role}'`);
  }
  if (!/^\d+$/.test(values.ttl) || Number(values.ttl) < 1) {
    fail(`--ttl must be a positive number of seconds, got '${values.ttl}'`);
  }
  const secret = loadSecret();
  if (!secret) {
    fail("no JWT secret: set JWT_SECRET in the environment or put a JWT_SECRET=... line in .dev.vars at the repository root", 1);
  }
  console.log(mintToken({ secret, sub: values.sub, role: values.role, ttl: Number(values.ttl) }));
}

const invokedDirectly =
  process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) main();
