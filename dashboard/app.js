// The operator dashboard (docs/design.md §15). Every number comes from the admin API
// under /admin/migrate/; this file holds no data and no secret. Behind Cloudflare Access
// the browser's session signs the calls in; without it (local development) an admin
// token pasted here is kept in this tab's sessionStorage only and sent as a bearer.
"use strict";

const API = "/admin/migrate";
const TOKEN_KEY = "kv-migrate.admin-token";
const REFRESH_MS = 5000;
const NAMES = ["legacy", "dual_write", "read_new", "backfill", "new_primary", "complete"];
// Where each phase sends writes (authoritative store first) and reads (README).
const ROUTING = [
  ["old", "old"],
  ["old, then new", "old"],
  ["new, then old", "new → old"],
  ["new, then old", "new → old"],
  ["new", "new → old"],
  ["new", "new"],
];

const $ = (id) => document.getElementById(id);
let status = null;
let timer = null;
let loading = false;
// A refresh asked for while one runs follows it, so an action's effect is never missed.
let again = false;
let refreshes = 0;

// ---------- small helpers: DOM built from text only, never from HTML ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) if (child) node.append(child);
}

const num = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "—");

function duration(ms) {
  if (ms === null || ms === undefined) return "unknown";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

const when = (ms) => (ms ? new Date(ms).toLocaleString() : "never");
const phaseLabel = (n) => `${n} ${NAMES[n] ?? "?"}`;

function keyList(keys) {
  if (!keys || keys.length === 0) return null;
  return el("ul", { class: "keys" }, keys.slice(0, 10).map((k) => el("li", {}, el("code", {}, k))));
}

function sample(label, s) {
  if (!s) return null;
  const count = `${num(s.count)}${s.exact === false ? "+" : ""}`;
  return el("div", { class: "sample" }, el("p", {}, el("strong", {}, `${label}: `), count), keyList(s.keys));
}

function badge(ok, yes = "met", no = "not met") {
  return el("span", { class: ok ? "badge ok" : "badge bad" }, ok ? yes : no);
}

// ---------- the API ----------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** One call: resolves with {status, ok, json, error}; never throws. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch {
    return { status: 0, ok: false, json: null, error: { code: "unreachable", message: "the worker could not be reached" } };
  }
  let json = null;
  try {
    json = await res.json();
  } catch {
    json = null;
  }
  const error = res.ok ? null : (json && json.error) || { code: `http_${res.status}`, message: res.statusText || "no answer" };
  if (res.status === 401 || res.status === 403) showSignIn(error);
  return { status: res.status, ok: res.ok, json, error };
}

const errorText = (r) => `${r.status ? `${r.status} ` : ""}${r.error.code}: ${r.error.message}`;

// ---------- signing in ----------

function showSignIn(error) {
  const message = error
    ? `Not signed in as an admin (${error.code}): ${error.message}`
    : "Paste an admin token to continue.";
  $("sign-in-message").textContent = message;
  $("sign-in").hidden = false;
  $("main").hidden = status === null;
  $("sign-out").hidden = !token();
}

function hideSignIn() {
  $("sign-in").hidden = true;
  $("sign-out").hidden = !token();
}

// ---------- rendering the status ----------

function cohortText(c) {
  return `${c.share / 100}% of customers and ${c.customers.length} named customer(s) are in phase ${phaseLabel(c.to)}`;
}

function renderPhase(s) {
  const current = s.phase.current;
  const cohort = s.phase.cohort;
  const place = (n) => (n === current ? "current" : cohort && n === cohort.to ? "cohort" : n < current ? "past" : "future");
  fill(
    $("phases"),
    NAMES.map((name, n) =>
      el(
        "li",
        { class: place(n), ...(n === current ? { "aria-current": "step" } : {}) },
        el("span", { class: "n" }, n),
        el("span", { class: "name" }, name),
      ),
    ),
  );
  const [writes, reads] = ROUTING[current];
  fill($("routing"), el("span", {}, el("strong", {}, "Writes: "), writes), el("span", {}, el("strong", {}, "Reads: "), reads));
  const meta = [`Phase ${phaseLabel(current)} since ${when(s.phase.changedAt)} (by ${s.phase.changedBy || "nobody"}, ${s.phase.source}).`];
  if (s.phase.unsettledMs) meta.push(`Settling: ${duration(s.phase.unsettledMs)} until every isolate serves it.`);
  if (cohort) meta.push(`Cohort: ${cohortText(cohort)} since ${when(cohort.startedAt)} (widened ${when(cohort.widenedAt)}); moving to it completes it.`);
  if (s.phase.finalizedAt) meta.push(`Finalized ${when(s.phase.finalizedAt)}: OTP_AUTH_KV is no longer read or written.`);
  if (s.newStoreDiverged) meta.push("The new store is behind (writes skipped it).");
  if (s.oldStoreDiverged) meta.push("The old store is behind (writes skipped it).");
  $("phase-meta").textContent = meta.join(" ");
}

function gateBlock(title, gate) {
  if (!gate) return el("div", { class: "gate" }, el("h3", {}, title), el("p", { class: "muted" }, "No such move from here."));
  return el(
    "div",
    { class: "gate" },
    el("h3", {}, `${title}: to ${phaseLabel(gate.to)} `, badge(gate.met, "allowed", "refused")),
    gate.unmet.length === 0
      ? el("p", {}, "Every gate is met.")
      : el("ul", { class: "unmet" }, gate.unmet.map((g) => el("li", {}, el("code", {}, g.gate), ` — ${g.reason}`))),
  );
}

function renderGates(s) {
  fill($("gates"), gateBlock("Forward", s.gates.forward), gateBlock("Back", s.gates.back));
}

function rate(p) {
  if (p.fanout && typeof p.fanout.recordsPerSecond === "number") return p.fanout.recordsPerSecond;
  const working = (p.updatedAt || 0) - (p.startedAt || 0) - (p.pausedMs || 0);
  return p.startedAt && working > 0 ? (p.counts.scanned * 1000) / working : null;
}

function progressText(p) {
  const state = p.complete ? "complete" : p.paused ? "paused" : p.runs === 0 ? "not started" : "running";
  const perSecond = rate(p);
  const parts = [
    `${state}, stage ${p.stage}, pass ${p.pass}, ${num(p.runs)} runs`,
    `${num(p.total)} keys to scan in each pass`,
    perSecond === null ? null : `${perSecond.toFixed(1)} records/s`,
    p.complete ? null : `ETA ${p.etaMs === null || p.etaMs === undefined ? "unknown" : duration(p.etaMs)}`,
    p.unsettledCopies ? "copies await the pass that re-reads them" : null,
  ];
  return parts.filter(Boolean).join(" · ");
}

function setBar(bar, label, percent) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  bar.value = value;
  label.textContent = `${value.toFixed(1)}%`;
}

function renderBackfill(s) {
  const p = s.backfill;
  setBar($("backfill-bar"), $("backfill-percent"), p.percent);
  $("backfill-summary").textContent = progressText(p);
  const counts = ["copied", "skipped", "conflicts", "corrupt", "expired", "corrected", "errors"];
  fill($("backfill-counts"), counts.map((c) => el("div", {}, el("dt", {}, c), el("dd", { "data-count": c }, num(p.counts[c])))));
  const f = p.fanout;
  fill(
    $("fanout"),
    f
      ? el(
          "div",
          {},
          el("h3", {}, "Queue fan-out"),
          el(
            "dl",
            { class: "counts" },
            [
              ["queued", f.queued],
              ["in flight", f.inFlight],
              ["done", f.done],
              ["failed", f.failed],
              ["set aside", f.parked],
              ["max in flight", f.maxInFlight],
            ].map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, num(v)))),
          ),
          f.failedKeys && f.failedKeys.length ? el("p", {}, "Failed chunks start at: ", keyList(f.failedKeys)) : null,
        )
      : null,
  );
}

function verificationText(v) {
  const state = v.complete ? (v.clean ? "clean" : "differences found") : "not complete";
  const chunks = v.fanout
    ? `; on the queue: ${num(v.fanout.done)} of ${num(v.fanout.queued)} chunks compared${v.fanout.failed.count ? `, ${num(v.fanout.failed.count)} failed (not compared)` : ""}`
    : "";
  return `${v.mode}, ${state}: listed ${num(v.listed)}, values compared ${num(v.valuesCompared)}, missing ${num(v.missing.count)}, mismatched ${num(v.mismatched.count)}, extra ${num(v.extra.count)}${chunks}`;
}

function verificationBlock(title, v) {
  if (!v) return el("div", {}, el("h3", {}, title), el("p", { class: "muted" }, "None yet."));
  return el(
    "div",
    {},
    el("h3", {}, `${title} `, badge(v.complete && v.clean, "clean", v.complete ? "differs" : "running")),
    el("p", {}, verificationText(v)),
    el("p", { class: "muted" }, `Started ${when(v.startedAt)}; completed ${when(v.completedAt)}.`),
    keyList([
      ...v.missing.keys.map((k) => `missing ${k}`),
      ...v.mismatched.keys.map((k) => `mismatched ${k}`),
      ...v.extra.keys.map((k) => `extra ${k}`),
      ...(v.fanout?.failed.keys ?? []).map((k) => `not compared ${k}`),
    ]),
  );
}

function renderVerification(s) {
  const { current, lastFull } = s.verification;
  // The latest is shown apart only when it is another run than the last full one.
  const same = current && lastFull && current.mode === lastFull.mode && current.startedAt === lastFull.startedAt;
  fill($("verification"), verificationBlock("Last full", lastFull), current && !same ? verificationBlock("Latest", current) : null);
}

function renderSync(s) {
  fill(
    $("out-of-sync"),
    sample("Repair journal", s.repairJournal),
    sample("Read repairs settling", s.readRepairsSettling),
    sample("Fallback hits", s.fallbackHits),
  );
}

function renderPeriod(s) {
  const p = s.verificationPeriod;
  $("period-card").hidden = !p;
  if (!p) return;
  fill(
    $("period"),
    el("p", {}, p.leftMs > 0 ? `${duration(p.leftMs)} left of ${duration(p.periodMs)} (started ${when(p.startedAt)}).` : `Passed (${duration(p.periodMs)}, started ${when(p.startedAt)}).`),
    sample("Reads served by the old store since phase 4", p.fallbackHits),
  );
}

function renderReverse(s) {
  const r = s.reverseSync;
  const shown = r && (r.needed || r.runs > 0);
  $("reverse-card").hidden = !shown;
  if (!shown) return;
  setBar($("reverse-bar"), $("reverse-percent"), r.percent);
  const vouch = r.vouches ? "it vouches for the old store" : "it does not vouch for the old store yet";
  const f = r.fanout;
  const chunks = f
    ? ` Queue: ${num(f.done)} of ${num(f.queued)} chunks done, ${num(f.inFlight)} in flight, ${num(f.failed)} failed.`
    : "";
  $("reverse-summary").textContent = `${r.needed ? "needed" : "not needed"}; ${vouch}. ${progressText(r)}${chunks}`;
}

function auditDetail(e) {
  const parts = [];
  if (e.from !== undefined && e.to !== undefined) parts.push(`${e.from} → ${e.to}`);
  if (e.forced) parts.push("forced");
  if (e.unmetGates && e.unmetGates.length) parts.push(`past ${e.unmetGates.join(", ")}`);
  if (e.reason) parts.push(e.reason);
  return parts.join("; ");
}

function renderAudit(entries) {
  const body = $("audit").tBodies[0];
  fill(
    body,
    entries.length
      ? entries.map((e) => el("tr", {}, el("td", {}, when(e.at)), el("td", {}, e.who), el("td", {}, e.action), el("td", {}, auditDetail(e))))
      : el("tr", {}, el("td", { colspan: "4", class: "muted" }, "No admin action yet.")),
  );
}

const CONFLICT_WHY = {
  unordered: "versions cannot be ordered",
  preexisting: "held before the migration",
};

function sideText(side) {
  if (!side.present) return "(absent)";
  const value = typeof side.value === "string" ? side.value : JSON.stringify(side.value);
  return side.metadata ? `${value} metadata ${JSON.stringify(side.metadata)}` : value;
}

function renderConflicts(page) {
  const rows = page.conflicts.map((c) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", {}, c.key)),
      el("td", {}, CONFLICT_WHY[c.kind] || c.kind),
      el("td", { class: "value" }, sideText(c.old)),
      el("td", { class: "value" }, sideText(c.new)),
      el("td", {}, c.settled ? "settled" : "open"),
      settleCell(c),
    ),
  );
  if (!page.complete) {
    rows.push(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "More: kv-migrate conflicts --all")));
  }
  fill(
    $("conflicts").tBodies[0],
    rows.length ? rows : el("tr", {}, el("td", { colspan: "6", class: "muted" }, "No conflict.")),
  );
}

// The rules a conflict is settled by (docs/design.md §6, "Settling").
const RULES = [
  ["keep_old", "Keep OTP_AUTH_KV's"],
  ["keep_new", "Keep CUSTOMER_KV's"],
  ["newer", "Later updatedAt"],
  ["merge", "Merge fields"],
];
const CHOSE = { old: "OTP_AUTH_KV's value", new: "CUSTOMER_KV's value", merged: "the merged record" };

function settleCell(c) {
  if (c.settled) return el("td", {});
  const rule = el("select", { "aria-label": `Rule for ${c.key}`, "data-key": c.key }, RULES.map(([value, text]) => el("option", { value }, text)));
  const button = el("button", { type: "button", class: "settle", "data-key": c.key }, "Settle…");
  button.onclick = () => settleConflict(c, rule.value);
  return el("td", { class: "settle-cell" }, rule, " ", button);
}

function settleText(result) {
  switch (result.outcome) {
    case "written":
    case "would_write":
      return `${result.key}: both stores ${result.outcome === "written" ? "now hold" : "would hold"} ${CHOSE[result.chose]}.`;
    case "agreed":
      return `${result.key}: the stores agree already.`;
    case "changed":
      return `${result.key}: its values changed since this page was loaded; look again.`;
    default:
      return `${result.key}: ${result.reason || result.outcome.replace(/_/g, " ")}.`;
  }
}

/** A dry run first; then, confirmed, the settle of what the page showed (its fingerprint). */
async function settleConflict(c, rule) {
  const body = { rule, keys: [c.key], expect: { [c.key]: c.fingerprint } };
  const plan = await api("POST", "/conflicts/settle", { ...body, dryRun: true });
  const planned = plan.ok ? plan.json.results[0] : null;
  if (!planned || planned.outcome !== "would_write") {
    showResult(false, planned ? settleText(planned) : errorText(plan), plan.json);
    await refresh();
    return;
  }
  const answer = await confirmDialog({
    title: `Settle ${c.key}?`,
    body: el("p", {}, settleText(planned), " The other value is overwritten; the audit records the decision."),
    okText: "Settle",
  });
  if (!answer) return;
  const res = await act("POST", "/conflicts/settle", body, (j) => settleText(j.results[0]));
  if (res.ok && res.json.results[0].outcome !== "written") showResult(false, settleText(res.json.results[0]), res.json);
}

function renderActions(s) {
  const current = s.phase.current;
  const forward = $("move-forward");
  const back = $("move-back");
  forward.disabled = !s.gates.forward;
  back.disabled = !s.gates.back;
  forward.textContent = s.gates.forward ? `Move to ${phaseLabel(s.gates.forward.to)}…` : "Move forward";
  back.textContent = s.gates.back ? `Move back to ${phaseLabel(s.gates.back.to)}…` : "Move back";
  const select = $("rollback-to");
  const chosen = select.value;
  fill(select, NAMES.slice(0, current).map((name, n) => el("option", { value: String(n) }, phaseLabel(n))));
  if (chosen && Number(chosen) < current) select.value = chosen;
  select.disabled = $("rollback").disabled = current === 0 || Boolean(s.gates.cancel);
  $("cancel-cohort").hidden = !s.gates.cancel;
}

async function cancelCohort() {
  const gate = status && status.gates.cancel;
  if (!gate) return;
  const answer = await confirmDialog({
    title: `Cancel the cohort? (${cohortText(status.phase.cohort)})`,
    body: el("div", {}, el("p", {}, `Every customer of the cohort goes back to phase ${phaseLabel(gate.to)}.`), gateList(gate)),
    forceable: gate.unmet.length > 0,
    okText: "Cancel the cohort",
  });
  if (!answer) return;
  const body = answer.force ? { force: true, reason: answer.reason } : {};
  await act("POST", "/cohort/cancel", body, (j) => `cohort ${j.done}: everyone in phase ${phaseLabel(j.phase.current)}.`);
}

function render(s) {
  renderPhase(s);
  renderGates(s);
  renderBackfill(s);
  renderVerification(s);
  renderSync(s);
  renderPeriod(s);
  renderReverse(s);
  renderActions(s);
}

async function refresh() {
  if (loading) {
    again = true;
    return;
  }
  loading = true;
  try {
    const [res, audit, conflicts] = await Promise.all([
      api("GET", "/status"),
      api("GET", "/audit?limit=20"),
      api("GET", "/conflicts?limit=20"),
    ]);
    if (!res.ok) {
      $("refreshed").textContent = `Refresh failed: ${errorText(res)}`;
      $("refreshed").className = "error";
      return;
    }
    status = res.json;
    hideSignIn();
    $("main").hidden = false;
    render(status);
    renderAudit(audit.ok ? audit.json.entries : status.recentAudit || []);
    if (conflicts.ok) renderConflicts(conflicts.json);
    $("refreshed").className = "";
    $("refreshed").textContent = `Refreshed at ${new Date().toLocaleTimeString()}`;
    document.body.dataset.phase = String(status.phase.current);
    document.body.dataset.refreshes = String(++refreshes);
  } finally {
    loading = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

function schedule() {
  clearInterval(timer);
  timer = $("auto-refresh").checked ? setInterval(refresh, REFRESH_MS) : null;
}

// ---------- confirming actions ----------

/**
 * Opens the confirmation dialog. `body` is a node; `forceable` shows the force box
 * (a reason is then required). Resolves with {force, reason} or null when cancelled.
 */
function confirmDialog({ title, body, forceable = false, okText = "Confirm" }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  fill($("confirm-body"), body);
  $("confirm-force").hidden = !forceable;
  $("force").checked = false;
  $("reason").value = "";
  $("confirm-error").textContent = "";
  $("confirm-ok").textContent = okText;
  fill($("result"));
  $("result").className = "result";
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-ok").onclick = $("confirm-cancel").onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    $("confirm-ok").onclick = () => {
      const force = forceable && $("force").checked;
      const reason = $("reason").value.trim();
      if (force && !reason) {
        $("confirm-error").textContent = "Forcing needs a reason: type why.";
        $("reason").focus();
        return;
      }
      done({ force, reason });
    };
    $("confirm-cancel").onclick = () => done(null);
    dialog.oncancel = (event) => {
      event.preventDefault();
      done(null);
    };
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

function showResult(ok, words, json) {
  const box = $("result");
  box.className = `result ${ok ? "ok" : "bad"}`;
  fill(
    box,
    el("p", {}, el("strong", {}, ok ? "Done: " : "Refused: "), words),
    json ? el("details", {}, el("summary", {}, "The server's answer"), el("pre", {}, JSON.stringify(json, null, 2))) : null,
  );
  box.focus();
}

/** Sends an action and shows its answer in words; refreshes afterwards. */
async function act(method, path, body, describe) {
  const res = await api(method, path, body);
  if (res.ok) showResult(true, describe(res.json), res.json);
  else showResult(false, errorText(res), res.json);
  await refresh();
  return res;
}

// ---------- the actions ----------

function gateList(gate) {
  return gate.unmet.length === 0
    ? el("p", {}, "Every gate of this move is met.")
    : el("div", {}, el("p", {}, "Gates not met:"), el("ul", { class: "unmet" }, gate.unmet.map((g) => el("li", {}, el("code", {}, g.gate), ` — ${g.reason}`))));
}

async function movePhase(gate) {
  if (!gate) return;
  const from = status.phase.current;
  const answer = await confirmDialog({
    title: `Move from phase ${phaseLabel(from)} to ${phaseLabel(gate.to)}?`,
    body: el("div", {}, el("p", {}, `Writes: ${ROUTING[gate.to][0]}; reads: ${ROUTING[gate.to][1]}.`), gateList(gate)),
    forceable: gate.unmet.length > 0,
    okText: "Move",
  });
  if (!answer) return;
  const body = { phase: gate.to };
  if (answer.force) Object.assign(body, { force: true, reason: answer.reason });
  await act("POST", "/phase", body, (j) =>
    j.changed
      ? `moved from phase ${phaseLabel(j.previous)} to ${phaseLabel(j.phase)}${j.forced ? `, forced past ${j.forcedGates.map((g) => g.gate).join(", ")}` : ""}.`
      : `already in phase ${phaseLabel(j.phase)}.`,
  );
}

function stepText(step) {
  switch (step.step) {
    case "move":
      return `move to phase ${phaseLabel(step.to)}, then wait for isolates to settle`;
    case "wait":
      return `wait ${duration(step.ms)} for isolates to settle on the last move`;
    case "repair":
      return "drain the repair journal";
    case "sync":
      return "reverse sync: copy back to the old store what was written since phase 4";
    default:
      return step.step;
  }
}

function takenText(t) {
  if (t.step === "move") return `moved ${t.from} → ${t.to}`;
  if (t.step === "repair") return `repaired ${num(t.report && t.report.repaired)} keys`;
  if (t.step === "sync") return `reverse sync ran${t.report ? ` (copied ${num(t.report.counts && t.report.counts.copied)})` : ""}`;
  return t.step;
}

async function rollback() {
  const to = Number($("rollback-to").value);
  const plan = await api("POST", "/rollback", { toPhase: to, dryRun: true });
  if (!plan.ok) {
    showResult(false, errorText(plan), plan.json);
    return;
  }
  const p = plan.json;
  const body = el(
    "div",
    {},
    el("p", {}, `The plan from phase ${phaseLabel(p.from)} (dry run, nothing changed):`),
    p.steps.length ? el("ol", { class: "steps" }, p.steps.map((s) => el("li", {}, stepText(s)))) : el("p", {}, "Nothing to do."),
    p.allowed
      ? el("p", {}, "No gate would stop it. Each call takes the steps that are safe now; call again to go on.")
      : el("div", {}, el("p", { class: "error" }, "It would stop at a gate only an operator can resolve:"), el("ul", { class: "unmet" }, p.unmet.map((g) => el("li", {}, el("code", {}, g.gate), ` — ${g.reason}`)))),
  );
  const answer = await confirmDialog({ title: `Roll back to phase ${phaseLabel(to)}?`, body, forceable: !p.allowed, okText: "Roll back" });
  if (!answer) return;
  const request = { toPhase: to };
  if (answer.force) Object.assign(request, { force: true, reason: answer.reason });
  const res = await api("POST", "/rollback", request);
  const r = res.json && res.json.rollback;
  if (res.ok && r) {
    showResult(true, `rolled back to phase ${phaseLabel(r.phase)} (${r.steps.map(takenText).join("; ") || "no step needed"}).`, res.json);
  } else if (res.status === 409 && r) {
    const next = r.next ? `; next: ${stepText(r.next)}` : "";
    showResult(false, `${res.error.message} (now at phase ${phaseLabel(r.phase)}${next}). Steps taken: ${r.steps.map(takenText).join("; ") || "none"}.`, res.json);
  } else {
    showResult(false, errorText(res), res.json);
  }
  await refresh();
}

const progressWords = (j) => (j && j.progress ? `backfill ${j.progress.paused ? "paused" : j.progress.complete ? "complete" : "running"}, ${Number(j.progress.percent).toFixed(1)}% of the pass scanned.` : "done.");

async function backfillControl(action, words) {
  const answer = await confirmDialog({ title: `${words} the backfill?`, body: el("p", {}, action === "reset" ? "Reset starts the backfill over; copies already made are skipped as in sync." : `The backfill will ${action}.`), okText: words });
  if (answer) await act("POST", `/backfill/${action}`, {}, progressWords);
}

async function throttle() {
  const n = Number($("throttle").value);
  if (!Number.isInteger(n) || n < 1 || n > 100000) {
    showResult(false, "the number of chunks in flight must be a whole number from 1 to 100,000.");
    $("throttle").focus();
    return;
  }
  const answer = await confirmDialog({ title: `At most ${num(n)} chunks in flight?`, body: el("p", {}, "Applies when the backfill fans out on a queue, from the planner's next run."), okText: "Throttle" });
  if (answer) await act("POST", "/backfill/throttle", { maxInFlight: n }, () => `at most ${num(n)} chunks of 100 keys in flight.`);
}

async function verify() {
  const mode = $("verify-mode").value;
  const body = mode === "sample" ? { mode: "sample", sample: 500 } : { mode: "full" };
  const answer = await confirmDialog({ title: `Run a ${mode} verification?`, body: el("p", {}, "It compares the stores key by key and writes nothing to them; large stores take several runs."), okText: "Verify" });
  if (answer) await act("POST", "/verify", body, (v) => `${verificationText(v)}${v.complete ? "." : " — run it again to continue."}`);
}

const emailWords = (a) =>
  `${a.dryRun ? "dry run, nothing written" : "repaired"}${a.complete ? "" : ", not complete (run again to continue)"}: ${num(a.recordsScanned)} records and ${num(a.mappingsScanned)} mappings scanned; ${num(a.derived)} derived, ${num(a.repointed)} repointed, ${num(a.rekeyed)} re-keyed, ${num(a.inPlace)} in place; ${num(a.conflicts)} emails held by two customers, ${num(a.orphans)} orphan mappings, ${num(a.corrupt)} corrupt.`;

async function emails() {
  const dry = await api("POST", "/emails", { dryRun: true });
  if (!dry.ok) {
    showResult(false, errorText(dry), dry.json);
    return;
  }
  const answer = await confirmDialog({
    title: "Repair the email mappings?",
    body: el("div", {}, el("p", {}, "What the audit found (", emailWords(dry.json), ")."), el("p", {}, "Conflicts and orphans are reported, never overwritten.")),
    okText: "Repair",
  });
  if (answer) await act("POST", "/emails", {}, emailWords);
  else showResult(true, `email audit ${emailWords(dry.json)}`, dry.json);
}

async function repair() {
  const answer = await confirmDialog({ title: "Repair now?", body: el("p", {}, "Drains the repair journal and checks the due read-repair copies (the cron does both every minute)."), okText: "Repair" });
  if (answer) await act("POST", "/repair", {}, (j) => `examined ${num(j.repair.examined)}, repaired ${num(j.repair.repaired)}, deferred ${num(j.repair.deferred)}; ${num(j.repair.settling)} settling.`);
}

// ---------- start ----------

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) {
      $("sign-in-message").textContent = "Paste a token first.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    refresh();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(null);
  });
  $("refresh-now").addEventListener("click", refresh);
  $("auto-refresh").addEventListener("change", schedule);
  $("move-forward").addEventListener("click", () => movePhase(status && status.gates.forward));
  $("move-back").addEventListener("click", () => movePhase(status && status.gates.back));
  $("cancel-cohort").addEventListener("click", cancelCohort);
  $("rollback").addEventListener("click", rollback);
  $("backfill-pause").addEventListener("click", () => backfillControl("pause", "Pause"));
  $("backfill-resume").addEventListener("click", () => backfillControl("resume", "Resume"));
  $("backfill-reset").addEventListener("click", () => backfillControl("reset", "Reset"));
  $("backfill-throttle").addEventListener("click", throttle);
  $("verify").addEventListener("click", verify);
  $("emails").addEventListener("click", emails);
  $("repair").addEventListener("click", repair);
  refresh();
  schedule();
}

document.addEventListener("DOMContentLoaded", start);
