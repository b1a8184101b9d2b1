// fleetmon dashboard: the fleet live (Server-Sent Events from Fleet/WatchLatest),
// history charts (uPlot), checks with pause/resume, availability and open alerts.
"use strict";

const agents = new Map(); // agent_id -> {info, host, sites: Map(url -> site)}
let selected = null;
let range = "1h";
let charts = [];

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

function bytes(v) {
  if (v == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${units[u]}`;
}
const pct = (v) => (v == null ? "-" : `${v.toFixed(1)} %`);
function ago(ms) {
  if (!ms) return "-";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

// An agent is stale when disconnected or silent for three of its intervals.
function state(a) {
  if (!a.info.connected) return "disconnected";
  const last = a.host ? a.host.sampled_at : a.info.last_sample_at;
  const interval = (a.host && a.host.interval_seconds) || 5;
  if (!last || Date.now() - last > 3 * interval * 1000) return "stale";
  return "live";
}

function fleetRow(id) {
  const a = agents.get(id);
  const h = a.host || {};
  const st = state(a);
  const labels = Object.entries(a.info.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  const cells = [
    ["agent", `${id}${a.info.hostname ? " (" + a.info.hostname + ")" : ""}`],
    ["state", st === "live" ? "● live" : st === "stale" ? "◌ stale" : "○ disconnected"],
    ["cpu", pct(h.cpu_percent)],
    ["memory", h.memory_total_bytes ? `${bytes(h.memory_used_bytes)} / ${bytes(h.memory_total_bytes)}` : "-"],
    ["disk", h.disk_total_bytes ? `${bytes(h.disk_used_bytes)} / ${bytes(h.disk_total_bytes)}` : "-"],
    ["load", h.load_1m == null ? "-" : `${h.load_1m.toFixed(2)} ${h.load_5m.toFixed(2)} ${h.load_15m.toFixed(2)}`],
    ["net", h.rx_bytes_per_second == null ? "-" : `${bytes(h.rx_bytes_per_second)}/s / ${bytes(h.tx_bytes_per_second)}/s`],
    ["last", ago(h.sampled_at || a.info.last_sample_at)],
    ["labels", labels],
  ];
  const tr = el("tr", { "data-agent": id, class: st === "live" ? "" : "stale", tabindex: "0" });
  for (const [field, text] of cells) {
    const td = el("td", { "data-field": field, text });
    if (field === "state") td.className = st === "live" ? "state-ok" : "state-bad";
    tr.append(td);
  }
  tr.addEventListener("click", () => select(id));
  tr.addEventListener("keydown", (e) => { if (e.key === "Enter") select(id); });
  return tr;
}

function renderFleet() {
  const body = $("#fleet tbody");
  body.replaceChildren(...[...agents.keys()].sort().map(fleetRow));
  if (agents.size === 0) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted", text: "no agent has connected yet" })));
  renderSummary();
}

// The one-line summary at the top, each part a link to its section. A check is down
// while a check_down alert (its quorum) is open, degraded while some location's latest
// result failed, up otherwise.
let shownChecks = null;
let shownAlerts = null;
function renderSummary() {
  const count = (list, f) => list.reduce((n, x) => n + (f(x) ? 1 : 0), 0);
  const all = [...agents.values()].filter((a) => a.info);
  $('[data-summary="agents"]').textContent =
    `Agents: ${count(all, (a) => state(a) === "live")} live, ${count(all, (a) => state(a) === "stale")} stale, ${count(all, (a) => state(a) === "disconnected")} disconnected`;
  if (shownChecks && shownAlerts) {
    const down = new Set(shownAlerts.filter((a) => a.kind === "check_down").map((a) => a.subject));
    const active = shownChecks.filter((c) => !c.paused);
    const isDown = (c) => down.has(c.id);
    const degraded = (c) => !isDown(c) && c.agents.some((a) => a.last && !a.last.ok);
    const paused = shownChecks.length - active.length;
    $('[data-summary="checks"]').textContent =
      `Checks: ${count(active, (c) => !isDown(c) && !degraded(c))} up, ${count(active, degraded)} degraded, ${count(active, isDown)} down${paused ? `, ${paused} paused` : ""}`;
  }
  if (shownAlerts) $('[data-summary="alerts"]').textContent = `Alerts: ${shownAlerts.length} open`;
}

// The CSRF token changes must carry, and what this dashboard's token may do.
const session = fetch("/api/session", { credentials: "same-origin" }).then((r) => r.json());

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function loadFleet() {
  const fleet = await getJson("/api/fleet");
  for (const a of fleet.agents) {
    const known = agents.get(a.agent_id) || { sites: new Map() };
    known.info = a;
    if (a.host && (!known.host || a.host.sampled_at >= known.host.sampled_at)) known.host = a.host;
    for (const s of a.sites) known.sites.set(s.url, s);
    agents.set(a.agent_id, known);
  }
  renderFleet();
}

function live() {
  const badge = $("#live");
  const events = new EventSource("/api/events");
  events.onopen = () => { badge.dataset.state = "live"; badge.textContent = "live"; };
  events.onerror = () => { badge.dataset.state = "down"; badge.textContent = "reconnecting…"; };
  events.addEventListener("host", (e) => {
    const h = JSON.parse(e.data);
    const a = agents.get(h.agent_id);
    if (!a) { loadFleet().catch(show); return; }
    a.host = h;
    a.info.connected = true;
    a.info.last_sample_at = h.sampled_at;
    const row = document.querySelector(`#fleet tr[data-agent="${CSS.escape(h.agent_id)}"]`);
    if (row) { row.replaceWith(fleetRow(h.agent_id)); renderSummary(); } else renderFleet();
    if (selected === h.agent_id) {
      renderProcesses(h);
      if (range === "1h") appendPoint(h);
    }
  });
  events.addEventListener("site", (e) => {
    const s = JSON.parse(e.data);
    const a = agents.get(s.agent_id);
    if (a) a.sites.set(s.url, s);
    if (s.check_id) updateCheckLocation(s);
  });
}

// --- charts ---------------------------------------------------------------
const SERIES = [
  ["cpu_percent", "CPU %", (v) => v],
  ["memory_used_bytes", "Memory used (GiB)", (v) => v / 2 ** 30],
  ["disk_used_bytes", "Disk used (GiB)", (v) => v / 2 ** 30],
  ["load_1m", "Load (1 min)", (v) => v],
  ["rx_bytes_per_second", "Network rx (KiB/s)", (v) => v / 1024],
  ["tx_bytes_per_second", "Network tx (KiB/s)", (v) => v / 1024],
];
let chartData = null;

async function select(id) {
  selected = id;
  $("#agent-panel").hidden = false;
  $("#agent-title").textContent = `Agent ${id}`;
  renderProcesses(agents.get(id).host || {});
  await drawCharts();
}

async function drawCharts() {
  const data = await getJson(`/api/series/${encodeURIComponent(selected)}?range=${range}`);
  chartData = data;
  const box = $("#charts");
  charts.forEach((c) => c.destroy());
  charts = [];
  box.replaceChildren();
  const seconds = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "1y": 365 * 86400 }[range];
  for (const [key, label, scale] of SERIES) {
    const holder = el("div", { class: "chart", "data-series": key }, el("h3", { text: label }));
    box.append(holder);
    const opts = {
      width: chartWidth(holder), height: 160,
      // The whole requested range, whatever part of it has samples.
      scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - seconds, now]; } } },
      series: [{}, { label, stroke: "#0a6cbd", width: 1.5, dash: key.startsWith("tx") ? [6, 3] : undefined }],
      axes: [{}, { size: 50 }],
      legend: { show: false },
    };
    charts.push(new uPlot(opts, [data.t, data[key].map(scale)], holder));
  }
  $("#charts").dataset.points = String(data.t.length);
  $("#charts").dataset.resolution = data.resolution;
}

function chartWidth(holder) {
  return Math.max(200, Math.floor(holder.clientWidth || holder.parentElement.clientWidth) - 4);
}

window.addEventListener("resize", () => {
  for (const c of charts) c.setSize({ width: chartWidth(c.root.parentElement), height: 160 });
});

function appendPoint(h) {
  if (!chartData) return;
  const t = Math.floor(h.sampled_at / 1000);
  chartData.t.push(t);
  for (const [key] of SERIES) chartData[key].push(h[key] ?? 0);
  charts.forEach((c, i) => {
    const [key, , scale] = SERIES[i];
    c.setData([chartData.t, chartData[key].map(scale)]);
  });
  $("#charts").dataset.points = String(chartData.t.length);
}

// The busiest processes of the latest sample (by CPU, then the rest of the
// largest by memory), as the agent ranked them; the live view's first load has
// none, the next sample brings them.
function renderProcesses(h) {
  const body = $("#processes tbody");
  const list = h.processes || [];
  if (list.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "8", class: "muted", text: h.sampled_at ? "this agent reports no processes (processes = 0)" : "the next sample lists them" })));
    return;
  }
  body.replaceChildren(...list.map((p) => {
    const rank = [p.cpu_rank ? `#${p.cpu_rank} by CPU` : "", p.memory_rank ? `#${p.memory_rank} by memory` : ""].filter(Boolean).join(", ");
    const tr = el("tr", { "data-pid": String(p.pid), title: rank });
    const cells = [
      ["pid", String(p.pid)], ["name", p.name], ["user", p.user],
      ["cpu", pct(p.cpu_percent)], ["memory", bytes(p.resident_bytes)],
      ["threads", String(p.threads)], ["started", ago(p.started_at)],
      ["command", p.command_line],
    ];
    for (const [field, text] of cells) tr.append(el("td", { "data-field": field, text }));
    tr.lastChild.title = p.command_line;
    return tr;
  }));
}

// --- checks ----------------------------------------------------------------
function locationText(last) {
  if (!last) return "no result yet";
  const status = last.status_code ? ` ${last.status_code}` : "";
  return last.ok ? `✓ ok${status}` : `✗ ${last.failure || "failed"}${status}`;
}

function updateCheckLocation(s) {
  const cell = document.querySelector(`#checks td[data-check="${CSS.escape(s.check_id)}"] [data-location="${CSS.escape(s.agent_id)}"]`);
  if (cell) {
    cell.textContent = `${s.agent_id}: ${locationText(s)}`;
    cell.className = s.ok ? "state-ok" : "state-bad";
  }
}

let viewer = false;
session.then((s) => { viewer = s.role === "viewer"; }).catch(show);

async function loadChecks() {
  let checks;
  try { checks = await getJson("/api/checks"); } catch (e) { return show(e); }
  shownChecks = checks;
  renderSummary();
  const body = $("#checks tbody");
  if (checks.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "no central checks (fleetmon checks add)" })));
    return;
  }
  body.replaceChildren(...checks.map((c) => {
    const locations = el("td", { "data-check": c.id });
    for (const a of c.agents) {
      const maint = a.maintenance ? ` (maintenance: ${a.maintenance.reason || "window " + a.maintenance.id})` : "";
      const span = el("span", { "data-location": a.agent_id, class: a.last ? (a.last.ok ? "state-ok" : "state-bad") : "muted", text: `${a.agent_id}: ${locationText(a.last)}${maint}` });
      locations.append(span, el("br"));
    }
    const button = el("button", { class: "action", text: c.paused ? "Resume" : "Pause" });
    button.hidden = viewer;
    button.addEventListener("click", async () => {
      button.disabled = true;
      const { csrf, csrf_header: header } = await session;
      const r = await fetch(`/api/checks/${encodeURIComponent(c.id)}/${c.paused ? "resume" : "pause"}`,
        { method: "POST", credentials: "same-origin", headers: { [header]: csrf } });
      if (!r.ok) show(new Error(await r.text()));
      await loadChecks();
    });
    return el("tr", { "data-check-row": c.id },
      el("td", { text: c.id }),
      el("td", { text: c.target }),
      el("td", { "data-field": "check-state", class: c.paused ? "state-bad" : c.maintenance ? "state-maint" : "state-ok",
        text: c.paused ? "‖ paused" : c.maintenance ? `🔧 maintenance${c.maintenance.reason ? ": " + c.maintenance.reason : ""}` : "▶ active" }),
      locations,
      el("td", {}, button));
  }));
}

// --- availability and alerts -------------------------------------------------
async function loadSites() {
  let day, week, month;
  try {
    [day, week, month] = await Promise.all(["24h", "7d", "30d"].map((r) => getJson(`/api/sites?range=${r}`)));
  } catch (e) { return show(e); }
  const up = (list, url) => { const s = list.find((x) => x.url === url); return s ? `${s.uptime_percent.toFixed(2)} %` : "-"; };
  const body = $("#sites tbody");
  body.replaceChildren(...day.map((s) => el("tr", { "data-site": s.url },
    el("td", { text: s.url }),
    el("td", { "data-field": "uptime-24h", text: up(day, s.url) }),
    el("td", { text: up(week, s.url) }),
    el("td", { text: up(month, s.url) }),
    // Percentiles come from raw rows; beyond them the rollups give an average.
    el("td", { text: s.p50_ms == null ? `avg ${s.avg_ms.toFixed(0)} ms` : `${s.p50_ms.toFixed(0)} / ${s.p95_ms.toFixed(0)} ms` }),
    el("td", { text: Object.entries(s.status_codes).map(([k, v]) => `${k}: ${v}`).join(", ") }))));
  if (day.length === 0) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "nothing stored in the last 24 h" })));
}

async function loadAlerts() {
  let alerts;
  try { alerts = await getJson("/api/alerts"); } catch (e) { return show(e); }
  shownAlerts = alerts;
  renderSummary();
  const list = $("#alerts");
  if (alerts.length === 0) { list.replaceChildren(el("li", { class: "muted", text: "no open alerts" })); return; }
  list.replaceChildren(...alerts.map((a) => el("li", { "data-alert": String(a.id) },
    el("strong", { text: `⚠ ${a.kind} ${a.subject}` }),
    ` ${a.silenced ? "(silenced) " : ""}— ${a.cause} — opened ${ago(a.opened_at)}`)));
}

async function loadAudit() {
  let events;
  try { events = await getJson("/api/audit"); } catch (e) { return show(e); }
  const body = $("#audit tbody");
  if (events.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "no changes in 24 h" })));
    return;
  }
  body.replaceChildren(...events.map((e) => el("tr", { "data-action": e.action, "data-subject": e.subject },
    el("td", { text: ago(e.at) }),
    el("td", { text: e.actor }),
    el("td", { text: e.role }),
    el("td", { text: e.action }),
    el("td", { text: e.subject }),
    el("td", { text: e.from }))));
}

// --- availability report (History/GetAvailabilityReport) --------------------------
function duration(seconds) {
  const t = Math.max(0, Math.round(seconds));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} min ${String(s).padStart(2, "0")} s`;
  if (m > 0) return `${m} min ${String(s).padStart(2, "0")} s`;
  return `${s} s`;
}
// Four decimals, never rounded up to 100.
const share = (p) => (p == null ? "no data" : `${(Math.floor(p * 10000) / 10000).toFixed(4)} %`);
const ms = (v) => (v == null ? "-" : v.toFixed(0));

function reportQuery() {
  const form = new FormData($("#report-form"));
  const q = new URLSearchParams({ from: form.get("from"), to: form.get("to") });
  if (form.get("check")) q.set("check", form.get("check"));
  return q;
}

async function loadReport() {
  const q = reportQuery();
  $("#report-csv").href = `/api/report?${q}&format=csv`;
  const body = $("#report tbody");
  let report;
  try { report = await getJson(`/api/report?${q}`); } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "10", class: "state-bad", text: String(e.message || e) })));
    return;
  }
  if (report.checks.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "10", class: "muted", text: "no checks existed in the period" })));
  } else {
    body.replaceChildren(...report.checks.map((c) => el("tr", { "data-report": c.check_id },
      el("td", { text: c.check_id }),
      el("td", { "data-field": "availability", text: share(c.availability_percent) }),
      el("td", { "data-field": "down", text: duration(c.down_seconds) }),
      el("td", { "data-field": "outages", text: String(c.outage_count) }),
      el("td", { text: c.mttr_seconds == null ? "-" : duration(c.mttr_seconds) }),
      el("td", { text: c.mtbf_seconds == null ? "-" : duration(c.mtbf_seconds) }),
      el("td", { "data-field": "maintenance", text: duration(c.maintenance_seconds) }),
      el("td", { "data-field": "no-data", text: duration(c.no_data_seconds) }),
      el("td", { text: `${ms(c.response_time_p50_ms)} / ${ms(c.response_time_p95_ms)} / ${ms(c.response_time_p99_ms)} ms` }),
      el("td", { text: String(c.results) }))));
  }
  $("#report-outages").replaceChildren(...report.checks.flatMap((c) => c.outages.map((o) =>
    el("li", { "data-outage": c.check_id },
      `${c.check_id}: down ${o.started_at} to ${o.ended_at || "now"} (${duration(o.duration_seconds)}, counted ${duration(o.counted_seconds)}) at ${o.locations.join(", ")}`))));
}

{
  const day = (offset) => new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10);
  const form = $("#report-form");
  form.elements.from.value = day(-30);
  form.elements.to.value = day(1);
  form.addEventListener("submit", (e) => { e.preventDefault(); loadReport(); });
}

function show(error) {
  const badge = $("#live");
  badge.dataset.state = "down";
  badge.textContent = String(error.message || error).slice(0, 120);
}

for (const b of document.querySelectorAll(".ranges button")) {
  b.addEventListener("click", async () => {
    range = b.dataset.range;
    for (const o of document.querySelectorAll(".ranges button")) o.setAttribute("aria-pressed", String(o === b));
    if (selected) await drawCharts();
  });
}

loadFleet().then(live).catch(show);
loadChecks();
loadSites();
loadAlerts();
setInterval(() => loadFleet().catch(show), 10000);
loadAudit();
loadReport();
setInterval(() => { loadChecks(); loadAlerts(); loadAudit(); }, 5000);
setInterval(loadSites, 30000);
// Ages and staleness move with the clock, not only with samples.
setInterval(renderFleet, 1000);
