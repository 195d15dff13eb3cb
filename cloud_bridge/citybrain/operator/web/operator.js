// The operator's page: fetches the JSON API, re-fetches a section when the event stream says it
// changed, and writes everything with textContent (never HTML from data).
"use strict";

const SEVERITY = {
  critical: "严重 critical", major: "主要 major", minor: "次要 minor",
  warning: "警告 warning", info: "提示 info",
};
const STATE = { online: "在线 online", offline: "离线 offline", raised: "触发 raised", cleared: "解除 cleared" };
const SVG = "http://www.w3.org/2000/svg";
const GW_PAGE = 100;

let csrf = "";
let skewMs = 0; // server clock - this clock, from the last answer
const firstShown = new Map(); // alarm id -> when its row first appeared (for the latency test)
const stateShown = new Map(); // gateway key -> [state, when that state first appeared]
const gw = { offset: 0, total: 0 };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

// Several things notice a sign-out at once (the button, the event stream, a refused refresh);
// only the first may navigate, or the second aborts the first mid-load.
let leaving = false;
let stream = null;
function toLogin() {
  if (leaving) return;
  leaving = true;
  if (stream) stream.close();
  location.assign("/login");
}

async function api(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401) { toLogin(); throw new Error("signed out"); }
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  skewMs = Date.parse(body.server_time) - Date.now();
  return body.data;
}

function serverNow() { return Date.now() + skewMs; }

function age(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((serverNow() - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function ageCell(iso) {
  const td = el("td", age(iso), "age");
  if (iso) { td.dataset.since = iso; td.title = new Date(iso).toLocaleString(); }
  return td;
}

function localTime(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

function fmt(v) {
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
}

async function loadOverview() {
  const d = await api("/api/overview");
  $("n-online").textContent = d.gateways.online;
  $("n-offline").textContent = d.gateways.offline;
  $("n-alarms").textContent = Object.values(d.open_alarms).reduce((a, b) => a + b, 0);
  $("n-dead").textContent = d.dead_letters;
  $("n-gaps").textContent = d.gaps;
  $("n-missing").textContent = d.missing;
}

async function loadGateways() {
  const q = new URLSearchParams({ offset: gw.offset, limit: GW_PAGE });
  if ($("gw-state").value) q.set("state", $("gw-state").value);
  if ($("gw-search").value.trim()) q.set("q", $("gw-search").value.trim());
  const d = await api(`/api/gateways?${q}`);
  gw.total = d.total;
  $("gw-count").textContent = `${d.rows.length ? d.offset + 1 : 0}–${d.offset + d.rows.length} / ${d.total}`;
  const body = $("gateways").tBodies[0];
  body.replaceChildren();
  for (const g of d.rows) {
    const key = `${g.site}/${g.gateway}`;
    const box = g.outbox || {};
    const state = el("td", STATE[g.state] || g.state, `state ${g.state}`);
    const tr = row([
      el("td", key, "name"), state, ageCell(g.last_seen), el("td", g.session, "session"),
      el("td", box.depth ?? "–", "depth"), el("td", box.dropped ?? "–", "dropped"),
      el("td", g.reason || "", "reason"),
    ]);
    const seen = stateShown.get(key);
    if (!seen || seen[0] !== g.state) stateShown.set(key, [g.state, Date.now()]);
    tr.dataset.key = key;
    tr.dataset.state = g.state;
    tr.dataset.stateShownAt = stateShown.get(key)[1];
    tr.title = "点击查看测点 · click for its points";
    tr.addEventListener("click", () => pickGateway(g.site, g.gateway));
    body.appendChild(tr);
  }
}

async function loadAlarms() {
  const rows = await api("/api/alarms/open");
  const body = $("alarms").tBodies[0];
  body.replaceChildren();
  const now = Date.now();
  for (const a of rows) {
    const unit = a.unit ? ` ${a.unit}` : "";
    const tr = row([
      el("td", SEVERITY[a.severity] || a.severity, `sev ${a.severity}`),
      el("td", `${a.site}/${a.gateway}`), el("td", a.device), el("td", a.rule, "rule"),
      el("td", a.point), el("td", `${fmt(a.value)} / ${fmt(a.limit)}${unit}`, "value"),
      ageCell(a.since || a.time),
    ]);
    if (!firstShown.has(a.id)) firstShown.set(a.id, now);
    tr.dataset.key = `${a.site}/${a.gateway}/${a.device}/${a.rule}`;
    tr.dataset.id = a.id;
    tr.dataset.severity = a.severity;
    tr.dataset.receivedAt = a.received_at || "";
    tr.dataset.shownAt = firstShown.get(a.id);
    body.appendChild(tr);
  }
  $("alarms-empty").hidden = rows.length > 0;
}

async function loadHistory() {
  const rows = await api("/api/alarms/history?limit=100");
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const a of rows) {
    const tr = row([
      el("td", localTime(a.time)), el("td", STATE[a.state] || a.state, `state ${a.state}`),
      el("td", SEVERITY[a.severity] || a.severity, `sev ${a.severity}`),
      el("td", `${a.site}/${a.gateway}/${a.device}`), el("td", a.rule),
      el("td", `${fmt(a.value)}${a.unit ? " " + a.unit : ""}`),
    ]);
    tr.dataset.id = a.id;
    tr.dataset.state = a.state;
    body.appendChild(tr);
  }
}

async function loadDead() {
  const d = await api("/api/dead-letters?limit=100");
  $("dead-count").textContent = `${d.rows.length} / ${d.total}`;
  const body = $("dead").tBodies[0];
  body.replaceChildren();
  for (const r of d.rows) {
    const tr = row([
      el("td", localTime(r.received_at)), el("td", r.topic, "topic"), el("td", r.reason, "reason"),
      el("td", `${r.size} B`), el("td", r.preview, "preview"),
    ]);
    tr.dataset.n = r.n;
    body.appendChild(tr);
  }
}

function why(g) {
  if (g.dead_letters.length) {
    return g.dead_letters.map((d) => `${d.count} × 死信 dead letter: ${d.reason}`).join("; ");
  }
  return "原因不明 unknown: lost between gateway and ingest";
}

async function loadGaps() {
  const rows = await api("/api/gaps");
  const body = $("gaps").tBodies[0];
  body.replaceChildren();
  for (const g of rows) {
    const ended = g.ended_at ? `${localTime(g.ended_at)} ${g.end_reason || ""}` : "–";
    const tr = row([
      el("td", `${g.site}/${g.gateway}`, "name"), el("td", g.session, "session"),
      el("td", `${g.missing} / ${g.highest}`, "missing"), el("td", why(g), "why"),
      el("td", ended, "ended"), el("td", localTime(g.noticed_at)),
    ]);
    tr.dataset.key = `${g.site}/${g.gateway}/${g.session}`;
    body.appendChild(tr);
  }
}

async function pickGateway(site, gateway) {
  $("c-site").value = site;
  $("c-gateway").value = gateway;
  const q = new URLSearchParams({ site, gateway });
  const points = await api(`/api/points?${q}`);
  const devices = $("c-devices");
  const names = $("c-points");
  devices.replaceChildren();
  names.replaceChildren();
  for (const d of new Set(points.map((p) => p.device))) devices.appendChild(Object.assign(el("option"), { value: d }));
  for (const p of new Set(points.map((p) => p.point))) names.appendChild(Object.assign(el("option"), { value: p }));
  $("c-device").focus();
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawChart(s) {
  const chart = $("chart");
  chart.replaceChildren();
  const [W, H, L, R, T, B] = [760, 260, 70, 20, 20, 40];
  chart.dataset.point = `${s.site}/${s.gateway}/${s.device}/${s.point}`;
  chart.dataset.count = s.points.length;
  const unit = s.unit ? ` ${s.unit}` : "";
  chart.appendChild(svg("text", { x: L, y: 14, class: "title" }, `${s.device} · ${s.point}${unit}`));
  if (!s.points.length) {
    chart.appendChild(svg("text", { x: W / 2, y: H / 2, class: "nodata", "text-anchor": "middle" }, "无数据 · No data"));
    return;
  }
  const t0 = Date.parse(s.since);
  const t1 = Date.parse(s.until);
  let lo = Math.min(...s.points.map((p) => p.min));
  let hi = Math.max(...s.points.map((p) => p.max));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  chart.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  chart.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  chart.appendChild(svg("text", { x: L - 6, y: y(hi) + 4, "text-anchor": "end", class: "ymax" }, fmt(hi)));
  chart.appendChild(svg("text", { x: L - 6, y: y(lo) + 4, "text-anchor": "end", class: "ymin" }, fmt(lo)));
  chart.appendChild(svg("text", { x: L, y: H - B + 18, class: "xmin" }, localTime(s.since)));
  chart.appendChild(svg("text", { x: W - R, y: H - B + 18, "text-anchor": "end", class: "xmax" }, localTime(s.until)));
  const mid = (p) => Date.parse(p.t) + (s.bucket_s * 1000) / 2;
  const band = s.points.map((p) => `${x(mid(p))},${y(p.max)}`)
    .concat(s.points.slice().reverse().map((p) => `${x(mid(p))},${y(p.min)}`));
  if (s.points.some((p) => p.min !== p.max)) chart.appendChild(svg("polygon", { points: band.join(" "), class: "band" }));
  chart.appendChild(svg("polyline", { points: s.points.map((p) => `${x(mid(p))},${y(p.avg)}`).join(" "), class: "line" }));
  for (const p of s.points) {
    const c = svg("circle", { cx: x(mid(p)), cy: y(p.avg), r: 3, class: "pt", "data-t": p.t, "data-v": p.avg });
    c.appendChild(svg("title", {}, `${localTime(p.t)}  ${fmt(p.avg)}${unit} (n=${p.count}, ${fmt(p.min)}…${fmt(p.max)})`));
    chart.appendChild(c);
  }
}

async function loadChart() {
  const ids = ["c-site", "c-gateway", "c-device", "c-point"];
  if (ids.some((id) => !$(id).value.trim())) return;
  const q = new URLSearchParams({
    site: $("c-site").value.trim(), gateway: $("c-gateway").value.trim(),
    device: $("c-device").value.trim(), point: $("c-point").value.trim(), minutes: $("c-minutes").value,
  });
  drawChart(await api(`/api/series?${q}`));
}

// One load of a section at a time: a call made while one runs makes it run once more after,
// so an older answer never overwrites a newer one.
function coalesced(fn) {
  let running = null;
  let again = false;
  return function run() {
    if (running) { again = true; return running; }
    running = (async () => {
      try { do { again = false; await fn(); } while (again); } finally { running = null; }
    })();
    return running;
  };
}

const load = {
  overview: coalesced(loadOverview), gateways: coalesced(loadGateways), alarms: coalesced(loadAlarms),
  history: coalesced(loadHistory), dead: coalesced(loadDead), gaps: coalesced(loadGaps),
};
const LOADERS = {
  gateways: [load.gateways, load.overview],
  alarms: [load.alarms, load.history, load.overview],
  dead_letters: [load.dead, load.overview],
  gaps: [load.gaps, load.overview],
};

async function refresh(sections) {
  const todo = new Set();
  for (const s of sections) for (const f of LOADERS[s] || []) todo.add(f);
  await Promise.all([...todo].map((f) => f().catch((e) => console.warn("refresh", e))));
}

function connect() {
  const live = $("live");
  const source = new EventSource("/events");
  stream = source;
  source.addEventListener("hello", () => {
    live.dataset.state = "live";
    refresh(Object.keys(LOADERS)); // whatever changed while the stream was away
  });
  source.addEventListener("changed", (e) => refresh(JSON.parse(e.data).sections));
  source.addEventListener("signed-out", toLogin);
  source.onerror = async () => {
    if (leaving) return;
    live.dataset.state = "down";
    if (source.readyState === EventSource.CLOSED) { // refused (401?): check, then try again
      try { await api("/api/me"); setTimeout(connect, 2000); } catch (e) { /* api() went to /login */ }
    }
  };
}

async function logout() {
  if (stream) stream.close(); // our own sign-out: the stream's "signed-out" is not needed
  await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
  toLogin();
}

function tick() {
  for (const td of document.querySelectorAll("td.age[data-since]")) td.textContent = age(td.dataset.since);
}

async function main() {
  const me = await api("/api/me");
  csrf = me.csrf;
  $("who").textContent = me.name;
  $("logout").addEventListener("click", logout);
  $("gw-state").addEventListener("change", () => { gw.offset = 0; load.gateways(); });
  $("gw-search").addEventListener("input", () => { gw.offset = 0; load.gateways(); });
  $("gw-prev").addEventListener("click", () => { gw.offset = Math.max(0, gw.offset - GW_PAGE); load.gateways(); });
  $("gw-next").addEventListener("click", () => {
    if (gw.offset + GW_PAGE < gw.total) { gw.offset += GW_PAGE; load.gateways(); }
  });
  $("chart-form").addEventListener("submit", (e) => { e.preventDefault(); loadChart(); });
  connect();
  setInterval(tick, 1000);
  setInterval(() => load.gateways().catch(() => {}), 15000); // last seen moves without events
}

main();
