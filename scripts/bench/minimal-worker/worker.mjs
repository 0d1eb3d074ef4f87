// The minimal worker the benchmark compares the product against: plain JavaScript that
// makes only the KV operations the product makes for the measured requests in phase 3
// (read hit, fallback read with its read-repair, update), in the same order, with no
// authentication, validation or error handling; with VIA_OBJECT=1 its updates run in a
// minimal Durable Object (`Writer`). See scripts/bench/workerd.mjs.

const json = (status, body) =>
  new Response(typeof body === "string" ? body : JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });

const decoder = new TextDecoder();
const text = (buffer) => decoder.decode(buffer);

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === "/health") return json(200, { status: "ok" });
    const match = /^\/customer\/([A-Za-z0-9_-]+)$/.exec(pathname);
    if (!match) return json(404, { error: "not_found" });
    const key = `customer_${match[1]}`;
    const newKv = env.CUSTOMER_KV;
    const oldKv = env.OTP_AUTH_KV;

    if (request.method === "GET") {
      // Read hit: one get in the new store (with metadata, as the product reads).
      const hit = await newKv.getWithMetadata(key, "arrayBuffer");
      if (hit.value !== null) return json(200, text(hit.value));
      // Fallback read: the old store, then the fallback-hit record (read first: written at
      // most once a minute) and the read-repair (list for expiration and metadata, the
      // copy's check entry with the copied value's SHA-256, the copy, a re-read of the
      // source).
      const found = await oldKv.getWithMetadata(key, "arrayBuffer");
      if (found.value === null) return json(404, { error: "not_found" });
      const served = text(found.value);
      const entry = { at: Date.now(), phase: 3 };
      const recorded = await newKv.get(`__migration/fallback/${key}`, "json");
      if (!(recorded && entry.at < recorded.at + 60_000)) {
        await newKv.put(`__migration/fallback/${key}`, JSON.stringify(entry), { metadata: entry });
      }
      const page = await oldKv.list({ prefix: key, limit: 1 });
      const listed = page.keys.find((k) => k.name === key);
      if (listed) {
        const options = {};
        if (listed.expiration) options.expiration = listed.expiration;
        if (listed.metadata) options.metadata = listed.metadata;
        const digest = await crypto.subtle.digest("SHA-256", found.value);
        const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
        const check = { due: Date.now() + 90_000, copied: [hex] };
        await newKv.put(`__migration/settle/${key}/${check.due}`, JSON.stringify(check), { metadata: check });
        await newKv.put(key, served, options);
        const again = await oldKv.getWithMetadata(key, "text");
        if (again.value !== served) await newKv.delete(key);
      }
      return json(200, served);
    }

    if (request.method === "PATCH") {
      if (env.VIA_OBJECT === "1") {
        const writer = env.WRITER.get(env.WRITER.idFromName(key));
        return writer.fetch("https://writer/", { method: "POST", body: JSON.stringify({ key, patch: await request.json() }) });
      }
      return update(env, key, await request.json());
    }
    return json(405, { error: "method_not_allowed" });
  },
};

// Update: read, merge, write the new store, then the old one.
async function update(env, key, patch) {
  const current = await env.CUSTOMER_KV.getWithMetadata(key, "arrayBuffer");
  if (current.value === null) return json(404, { error: "not_found" });
  const record = { ...JSON.parse(text(current.value)), ...patch, updatedAt: new Date().toISOString() };
  const bytes = JSON.stringify(record);
  await env.CUSTOMER_KV.put(key, bytes);
  await env.OTP_AUTH_KV.put(key, bytes);
  return json(200, bytes);
}

// With VIA_OBJECT=1, each customer's updates run here, one at a time (a KV call lets the
// next request in, so the object chains them itself): the least a worker can do to keep
// every field of concurrent updates, without the product's pacing, memory or checks.
export class Writer {
  constructor(state, env) {
    this.env = env;
    this.tail = Promise.resolve();
  }

  async fetch(request) {
    const { key, patch } = await request.json();
    const turn = this.tail.then(() => update(this.env, key, patch));
    this.tail = turn.catch(() => {});
    return turn;
  }
}
