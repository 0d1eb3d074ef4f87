// The worker (Rust, in workerd) must hash an email exactly as the OTP service does in
// JavaScript: sha256hex(email.toLowerCase().trim()). Node computes the expected form of
// each tricky address here; the worker must store the mapping under that hash, or refuse
// the address (400 invalid_email) when the normal form holds a control, invisible
// format or inner whitespace character.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, test } from "node:test";
import { startWorker } from "./harness.mjs";

let h;
before(async () => {
  h = await startWorker();
});
after(async () => {
  await h?.stop();
});

const CORPUS = [
  "  Ada@Example.COM  ",
  "\uFEFFbom@example.com", // JavaScript trims U+FEFF, Rust's trim does not
  "\u0085nel@example.com", // Rust's trim strips U+0085, JavaScript's does not
  "nel-end@example.com\u0085",
  "ΟΔΥΣΣΕΥΣ@example.com", // final sigma
  "İstanbul@example.com", // dotted capital I: i + U+0307
  "\u212Aelvin@example.com", // Kelvin sign
  "\u1E9Ee@example.com", // capital sharp s
  "ls@example.com\u2028", // line separator, trimmed by both
  "\u3000ideographic@example.com",
  "\u00A0nbsp@example.com\u00A0",
  "zw\u200Bsp@example.com", // zero-width space
  "zwj@exam\u200Dple.com", // zero-width joiner
  "soft\u00ADhyphen@example.com",
  "mvs@example.com\u180E", // Mongolian vowel separator: no longer whitespace in JavaScript
  "tag\u{E0041}@example.com", // tag character
  "bell\u0007@example.com",
  "inner space@example.com",
];

const sha256 = (text) => createHash("sha256").update(text, "utf8").digest("hex");

test("every address hashes as JavaScript's toLowerCase().trim() does, or is refused", async () => {
  let n = 0;
  for (const email of CORPUS) {
    n += 1;
    const normal = email.toLowerCase().trim();
    const refused = /[\p{Cc}\p{Cf}\s]/u.test(normal);
    const res = await h.request("POST", "/customer", {
      token: h.serviceToken,
      body: { customerId: `norm_${n}`, email },
    });
    const shown = JSON.stringify(email);
    if (refused) {
      assert.equal(res.status, 400, `${shown}: ${res.text}`);
      assert.equal(res.json.error.code, "invalid_email", shown);
      continue;
    }
    assert.equal(res.status, 201, `${shown}: ${res.text}`);
    const mapped = await h.old().get(`email_to_customer_${sha256(normal)}`);
    assert.equal(mapped, `norm_${n}`, `${shown}: no mapping under sha256(${JSON.stringify(normal)})`);
    const found = await h.request("GET", `/customer/by-email/${encodeURIComponent(normal)}`, { token: h.serviceToken });
    assert.equal(found.status, 200, `${shown}: ${found.text}`);
    assert.equal(found.json.customerId, `norm_${n}`);
  }
});
