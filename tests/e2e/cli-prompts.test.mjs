// The confirmation kv-migrate asks for on a terminal, through a pseudo-terminal made by
// util-linux `script`: "yes" goes ahead, anything else changes nothing and exits 8.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { KV_MIGRATE, kvMigrate, kvMigrateEnv, startWorker } from "./harness.mjs";

let h;

before(async () => {
  h = await startWorker();
});
after(async () => {
  await h?.stop();
});

const shellQuote = (word) => `'${word.replaceAll("'", `'\\''`)}'`;

/**
 * Runs kv-migrate with a terminal for its standard input and output, typing `answer`
 * once the question is on the screen. Resolves with the exit code and what the terminal
 * showed.
 */
function onTerminal(args, answer) {
  const command = [KV_MIGRATE, ...args].map(shellQuote).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("script", ["-qec", command, "/dev/null"], {
      env: kvMigrateEnv(h),
      stdio: ["pipe", "pipe", "pipe"],
    });
    let screen = "";
    let typed = false;
    const timer = setTimeout(() => child.kill(), 30_000);
    const watch = (data) => {
      screen += data.toString();
      if (!typed && screen.includes("Type yes to continue")) {
        typed = true;
        child.stdin.write(answer);
      }
    };
    child.stdout.on("data", watch);
    child.stderr.on("data", watch);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, screen, typed });
    });
  });
}

async function resets() {
  const run = await kvMigrate(h, ["audit", "--json", "--limit", "50"]);
  assert.equal(run.code, 0, run.stderr);
  return JSON.parse(run.stdout).entries.filter((e) => e.action === "backfill_reset").length;
}

test("answering anything but yes changes nothing and exits 8", async () => {
  const run = await onTerminal(["backfill", "reset"], "no\n");
  assert.ok(run.typed, `the question was asked:\n${run.screen}`);
  assert.match(run.screen, new RegExp(`Start the backfill over on ${h.url}\\. Type yes to continue`));
  assert.equal(run.code, 8, run.screen);
  assert.match(run.screen, /not confirmed: nothing was done/);
  assert.equal(await resets(), 0);
});

test("answering yes goes ahead", async () => {
  const run = await onTerminal(["backfill", "reset"], "yes\n");
  assert.ok(run.typed, run.screen);
  assert.equal(run.code, 0, run.screen);
  assert.equal(await resets(), 1);
});

test("--yes does not ask, even on a terminal", async () => {
  const run = await onTerminal(["--yes", "backfill", "reset"], "");
  assert.equal(run.typed, false, run.screen);
  assert.equal(run.code, 0, run.screen);
  assert.equal(await resets(), 2);
});

test("a dry run does not ask", async () => {
  const run = await onTerminal(["rollback", "0", "--dry-run"], "");
  assert.equal(run.typed, false, run.screen);
  assert.equal(run.code, 0, run.screen);
  assert.match(run.screen, /already in phase 0: nothing to do/);
});
