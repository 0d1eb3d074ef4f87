#!/usr/bin/env node
// The wasm's function names, kept beside the module instead of inside it.
//
//   node scripts/wasm-names.mjs split <module.wasm> <names.txt>
//       Removes the `name` custom section from the module (in place) and writes its
//       function names to names.txt, one "index<TAB>name" a line. scripts/build.sh runs
//       this after every build: the names are a sixth of the module's bytes and only a
//       person reading a stack trace needs them (BENCHMARKS.md §4).
//   node scripts/wasm-names.mjs symbolicate <names.txt> [trace.txt]
//       Reads a stack trace (a file, or standard input) and writes it back with every
//       line that names `wasm-function[N]` followed by that function's name.
//
// Keep names.txt with the build you deploy (`build/index_bg.names.txt`): a trace can only
// be read with the names of the very build that produced it.

import { readFileSync, writeFileSync } from "node:fs";

function leb(bytes, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if ((byte & 0x80) === 0) return [value, at];
  }
}

function utf8(bytes, at) {
  const [length, start] = leb(bytes, at);
  return [new TextDecoder().decode(bytes.subarray(start, start + length)), start + length];
}

/** The module's sections as [id, name (custom only), start, end] byte ranges. */
function sections(bytes) {
  const magic = [0x00, 0x61, 0x73, 0x6d];
  if (!magic.every((b, i) => bytes[i] === b)) throw new Error("not a wasm module");
  const found = [];
  let at = 8;
  while (at < bytes.length) {
    const start = at;
    const id = bytes[at];
    const [size, payload] = leb(bytes, at + 1);
    const end = payload + size;
    const name = id === 0 ? utf8(bytes, payload)[0] : null;
    found.push({ id, name, start, end, payload });
    at = end;
  }
  return found;
}

/** The function names of a `name` section's payload (subsection 1). */
function functionNames(bytes, section) {
  const names = [];
  let at = utf8(bytes, section.payload)[1];
  while (at < section.end) {
    const id = bytes[at];
    const [size, body] = leb(bytes, at + 1);
    if (id === 1) {
      let [count, p] = leb(bytes, body);
      for (; count > 0; count--) {
        let index;
        let name;
        [index, p] = leb(bytes, p);
        [name, p] = utf8(bytes, p);
        names.push([index, name]);
      }
    }
    at = body + size;
  }
  return names;
}

function split(modulePath, namesPath) {
  const bytes = readFileSync(modulePath);
  const all = sections(bytes);
  const named = all.filter((s) => s.id === 0 && s.name === "name");
  if (named.length === 0) {
    console.error(`wasm-names: ${modulePath} has no name section; left as it is`);
    return;
  }
  const names = named.flatMap((s) => functionNames(bytes, s));
  writeFileSync(namesPath, names.map(([i, n]) => `${i}\t${n}\n`).join(""));
  const kept = [bytes.subarray(0, 8), ...all.filter((s) => !named.includes(s)).map((s) => bytes.subarray(s.start, s.end))];
  const stripped = Buffer.concat(kept);
  // Node's engine may lack features workerd has, so check the layout, not a compile.
  if (sections(stripped).length !== all.length - named.length) throw new Error("split left a malformed module");
  writeFileSync(modulePath, stripped);
  console.error(`wasm-names: ${names.length} names moved to ${namesPath}; module ${bytes.length} -> ${stripped.length} bytes`);
}

function symbolicate(namesPath, tracePath) {
  const names = new Map();
  for (const line of readFileSync(namesPath, "utf8").split("\n")) {
    const tab = line.indexOf("\t");
    if (tab > 0) names.set(line.slice(0, tab), line.slice(tab + 1));
  }
  const trace = readFileSync(tracePath ?? 0, "utf8");
  const lines = trace.split("\n").map((line) => {
    const found = [...line.matchAll(/wasm-function\[(\d+)\]/g)].map((m) => names.get(m[1]) ?? "?");
    return found.length ? `${line}  <- ${found.join(", ")}` : line;
  });
  process.stdout.write(lines.join("\n"));
}

const [command, ...args] = process.argv.slice(2);
if (command === "split" && args.length === 2) split(...args);
else if (command === "symbolicate" && args.length >= 1) symbolicate(...args);
else {
  console.error("usage: wasm-names.mjs split <module.wasm> <names.txt> | symbolicate <names.txt> [trace.txt]");
  process.exit(2);
}
