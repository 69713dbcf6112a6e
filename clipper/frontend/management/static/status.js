// The status page: polls /status/data every 2 s and draws the tables and small SVG charts. No libraries.
"use strict";
const TOKEN_KEY = "clipper-admin-token";
const SVG = "http://www.w3.org/2000/svg";
let updates = 0;

// A token in the fragment (#token=...) is never sent to a server: keep it for this tab, then drop it from the URL.
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, "", location.pathname + location.search);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function fmt(x, digits = 1) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function ms(micros) { return micros === null || micros === undefined ? "–" : (micros / 1000).toFixed(1) + " ms"; }
function pct(r) { return r === null || r === undefined ? "–" : (100 * r).toFixed(1) + " %"; }
function ago(s) { return s < 60 ? Math.round(s) + " s" : Math.round(s / 60) + " min"; }

// A sparkline of `values` (nulls are gaps) over the window; `limit`: a dashed line (the SLO), in scale.
function chart(values, { limit = null, width = 150, height = 34 } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const present = values.filter((v) => v !== null);
  const top = Math.max(limit || 0, ...present, 1e-9);
  const x = (i) => (values.length > 1 ? (i * (width - 2)) / (values.length - 1) + 1 : width / 2);
  const y = (v) => height - 2 - (v / top) * (height - 4);
  let points = [];
  const flush = () => {
    if (points.length) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.join(" "));
      svg.append(line);
    }
    points = [];
  };
  values.forEach((v, i) => (v === null ? flush() : points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`)));
  flush();
  if (limit) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "slo");
    line.setAttribute("x1", 0); line.setAttribute("x2", width);
    line.setAttribute("y1", y(limit)); line.setAttribute("y2", y(limit));
    svg.append(line);
  }
  return svg;
}

function cell(content, cls = "") { return el("td", cls ? { class: cls } : {}, content); }

function renderApps(apps) {
  const rows = apps.map((a) => {
    const lat = a.latency_micros;
    const over = lat && a.slo_micros && lat.p99 > a.slo_micros;
    const series = a.series || { rate: [], default_ratio: [], p99: [] };
    return el("tr", { class: "app", "data-app": a.name },
      cell(a.name, "name"),
      cell(ms(a.slo_micros), "num slo"),
      cell(a.linked_models.join(", ") || "none", "models"),
      el("td", { class: "num rate" }, fmt(a.rate), chart(series.rate)),
      cell(pct(a.default_ratio_1m), "num defaults-1m"),
      cell(pct(a.default_ratio_5m), "num defaults-5m"),
      el("td", {}, chart(series.default_ratio)),
      cell(lat ? `${ms(lat.p50)} / ${ms(lat.p95)} / ${ms(lat.p99)}` : "–", "num latency" + (over ? " over" : "")),
      el("td", {}, chart(series.p99, { limit: a.slo_micros })));
  });
  document.querySelector("#apps tbody").replaceChildren(...rows);
}

function renderModels(models) {
  const rows = models.map((m) => {
    const b = m.batch_size;
    const setting = m.batch_size_setting === -1 ? "AIMD" : m.batch_size_setting === null ? "" : "fixed";
    const batch = b ? `${fmt(b.p50)} (max ${fmt(b.max, 0)}) ${setting}` : `– ${setting}`;
    return el("tr", { class: "model", "data-model": `${m.name}:${m.version}` },
      cell(`${m.name}:${m.version}` + (m.current ? "" : " (not current)"), "name"),
      cell(batch, "num batch"),
      el("td", {}, chart(m.series.batch_size)),
      cell(m.queue ?? "–", "num queue"),
      el("td", {}, chart(m.series.queue)),
      cell(m.connected_replicas ?? "–", "num connected"),
      cell(fmt(m.rate), "num rate"));
  });
  document.querySelector("#models tbody").replaceChildren(...rows);
}

function renderReplicas(replicas) {
  const rows = replicas.map((r) => el("tr", { class: "replica", "data-state": r.state },
    cell(`${r.model}:${r.version}`), cell(r.replica_id, "num"),
    el("td", {}, el("span", { class: "badge " + r.state.replace(" ", "-") }, r.state)),
    cell(ago(r.for_s), "num"), cell(r.frontend || "–")));
  document.querySelector("#replicas tbody").replaceChildren(...rows);
}

function render(data) {
  renderApps(data.apps);
  renderModels(data.models);
  renderReplicas(data.replicas);
  const c = data.cache;
  document.getElementById("cache").replaceChildren(
    `hit ratio ${pct(c.hit_ratio_1m)} over 1 min, ${pct(c.hit_ratio_5m)} over 5 min; `
    + `${c.hits} hits of ${c.lookups} lookups since the frontends started`);
  const badges = data.frontends.map((f) => el("span", { class: "badge " + f.state, title: f.error || f.rpc || "" },
    `query ${f.http} ${f.state}`));
  if (!data.redis.ok) badges.push(el("span", { class: "badge down", title: data.redis.error }, "redis down"));
  if (!data.frontends.length) badges.push(el("span", { class: "badge registered" }, "no query frontend announced"));
  document.getElementById("frontends").replaceChildren(...badges);
  document.getElementById("updated").textContent = "updated " + new Date(data.generated_at * 1000).toLocaleTimeString();
  document.body.dataset.updates = String(++updates);
}

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const error = document.getElementById("error");
  try {
    const response = await fetch("/status/data", { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (response.status === 401) {
      document.getElementById("login").hidden = false;
      error.hidden = !token;
      error.textContent = "The token was refused.";
      return;  // polling resumes once a token is given
    }
    if (!response.ok) throw new Error(`/status/data answered ${response.status}`);
    render(await response.json());
    error.hidden = true;
  } catch (e) {
    error.hidden = false;
    error.textContent = "The management frontend does not answer: " + e.message;
  }
  setTimeout(poll, 2000);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  poll();
});
poll();
