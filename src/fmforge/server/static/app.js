// fmforge dashboard: plain script over the JSON API, charts by uPlot (vendored). No build step.
"use strict";

const COLORS = ["#0969da", "#bc4c00", "#1a7f37", "#8250df", "#bf3989", "#0a7b83", "#6e7781", "#9a6700"];
const ANOMALY = "#d00000";

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    if (value !== 0 && (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-4)) return value.toExponential(3);
    return String(Number(value.toPrecision(4)));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function fmtTime(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function fmtBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 ** 2) return `${(size / 1024).toFixed(1)} KiB`;
  if (size < 1024 ** 3) return `${(size / 1024 ** 2).toFixed(1)} MiB`;
  return `${(size / 1024 ** 3).toFixed(1)} GiB`;
}

function fillTable(table, header, rows) {
  table.replaceChildren(el("tr", {}, ...header.map((h) => el("th", {}, h))));
  for (const row of rows) {
    table.append(el("tr", {}, ...row.map((cell) => (cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell)))));
  }
  if (!rows.length) table.append(el("tr", {}, el("td", { colspan: header.length, class: "muted" }, "none")));
}

function showError(error) {
  document.getElementById("error").textContent = String(error.message || error);
}

// ---- charts ------------------------------------------------------------------------------

// What every chart of the page shows, from the toolbar: EMA smoothing (0: raw), a log y scale,
// and the x axis (steps, or wall time).
const VIEW = { smoothing: 0, log: false, axis: "step" };
const CHARTS = [];

function setupControls() {
  const bar = document.getElementById("chart-controls");
  if (!bar) return;
  const smoothing = bar.querySelector("#smoothing");
  const shown = bar.querySelector("#smoothing-value");
  smoothing.addEventListener("input", () => {
    VIEW.smoothing = Number(smoothing.value);
    shown.textContent = VIEW.smoothing.toFixed(2);
    for (const chart of CHARTS) chart.redraw();
  });
  bar.querySelector("#logscale").addEventListener("change", (event) => {
    VIEW.log = event.target.checked;
    for (const chart of CHARTS) chart.rebuild();
  });
  bar.querySelector("#xaxis").addEventListener("change", (event) => {
    VIEW.axis = event.target.value;
    for (const chart of CHARTS) chart.rebuild();
  });
}

// Exponential moving average over the points drawn (W&B's smoothing), gaps kept as gaps.
function smooth(values, weight) {
  if (!weight) return values;
  let last = null;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return v;
    last = last === null ? v : last * weight + (1 - weight) * v;
    return last;
  });
}

// Tick labels that tell neighbours apart: 200k, 1.5M for large values, 0.0003 or 3.0e-4 for
// tiny ones, as many digits as the spacing of the ticks needs (uPlot's default rounds them away).
function tickLabel(value, step, largest) {
  if (value === null || !Number.isFinite(value)) return "";
  if (value === 0) return "0";
  const spacing = Math.abs(step) || Math.abs(value);
  if (largest >= 1e4 && largest < 1e16) {
    const [unit, suffix] = largest >= 1e12 ? [1e12, "T"] : largest >= 1e9 ? [1e9, "G"] : largest >= 1e6 ? [1e6, "M"] : [1e3, "k"];
    const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10(spacing / unit) - 1e-9)));
    return `${(value / unit).toFixed(decimals)}${suffix}`;
  }
  if (largest < 1e-3 || largest >= 1e16) {
    const digits = Math.min(6, Math.max(1, Math.ceil(Math.log10(largest / spacing) + 1e-9) + 1));
    return value.toExponential(digits - 1);
  }
  const decimals = Math.min(10, Math.max(0, Math.ceil(-Math.log10(spacing) - 1e-9)));
  return value.toFixed(decimals);
}

function tickLabels(splits) {
  const finite = splits.filter((v) => v !== null && Number.isFinite(v));
  const largest = Math.max(...finite.map(Math.abs), 0);
  const step = finite.length > 1 ? Math.min(...finite.slice(1).map((v, i) => Math.abs(v - finite[i]))) : 0;
  return splits.map((v) => tickLabel(v, step, largest));
}

// The y axis as wide as its longest label (uPlot's fixed 50 px clips "200,000").
const MEASURE = document.createElement("canvas").getContext("2d");
function axisSize(u, values) {
  MEASURE.font = "12px system-ui, -apple-system, sans-serif"; // uPlot's axis font
  const widest = Math.max(0, ...(values || []).map((v) => MEASURE.measureText(String(v)).width));
  return Math.ceil(widest) + 10 + 5 + 8; // the label, the tick, the gap, a margin
}

// One chart of `metric` for one or more runs. Each run's curve is fetched at the chart's pixel
// width (min/max per column, so spikes stay); zooming fetches the visible range again. The
// toolbar's smoothing redraws it; its log scale and x axis build it again.
function metricChart(parent, metric, runs, marks = {}) {
  const box = el("div", { class: "chart", "data-metric": metric });
  const title = el("div", { class: "title" }, metric);
  const hint = el("div", { class: "hint" }, "");
  box.append(title, hint);
  parent.append(box);
  const width = Math.max(300, box.clientWidth - 14);
  let plot = null;
  let raw = null; // the data as fetched (before smoothing)

  async function load(start, end) {
    const range = start === undefined ? ""
      : VIEW.axis === "step" ? `&start=${Math.floor(start)}&end=${Math.ceil(end)}` : `&start=${start}&end=${end}`;
    const parts = await Promise.all(runs.map((run) =>
      api(`/api/runs/${run.id}/series?metric=${encodeURIComponent(metric)}&width=${width}&axis=${VIEW.axis}${range}`)));
    const xs = [...new Set(parts.flatMap((p) => p.steps))].sort((a, b) => a - b);
    const position = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    for (const part of parts) {
      const ys = new Array(xs.length).fill(null);
      part.steps.forEach((step, i) => { ys[position.get(step)] = part.values[i]; });
      data.push(ys);
    }
    const points = parts.reduce((n, p) => n + p.steps.length, 0);
    box.dataset.points = String(points);
    const unit = VIEW.axis === "time" ? "time" : "steps";
    hint.textContent = start === undefined ? `${points} points drawn`
      : `${unit} ${VIEW.axis === "time" ? fmtTime(start) : Math.floor(start)}-${VIEW.axis === "time" ? fmtTime(end) : Math.ceil(end)}, ${points} points drawn`;
    return data;
  }

  function shown(data) {
    return [data[0], ...data.slice(1).map((ys) => {
      const smoothed = smooth(ys, VIEW.smoothing);
      return VIEW.log ? smoothed.map((v) => (v !== null && v > 0 ? v : null)) : smoothed;
    })];
  }

  function drawMarks(u) {
    const ctx = u.ctx;
    const [x0, x1] = [u.scales.x.min, u.scales.x.max];
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    if (VIEW.axis === "step") {
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = "#888";
      ctx.lineWidth = 1;
      for (const checkpoint of marks.checkpoints || []) {
        if (checkpoint.step < x0 || checkpoint.step > x1) continue;
        const x = u.valToPos(checkpoint.step, "x", true);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
      }
      ctx.setLineDash([]);
    }
    ctx.fillStyle = ANOMALY;
    let drawn = 0;
    for (const anomaly of VIEW.axis === "step" ? marks.anomalies || [] : []) {
      if (anomaly.metric !== metric || anomaly.step < x0 || anomaly.step > x1) continue;
      const value = Number(anomaly.value);
      const onCurve = Number.isFinite(value) && value >= u.scales.y.min && value <= u.scales.y.max;
      const y = onCurve ? u.valToPos(value, "y", true) : u.bbox.top + 8 * devicePixelRatio;
      ctx.beginPath();
      ctx.arc(u.valToPos(anomaly.step, "x", true), y, 5 * devicePixelRatio, 0, 2 * Math.PI);
      ctx.fill();
      drawn += 1;
    }
    box.dataset.anomalies = String(drawn);
    ctx.restore();
  }

  async function zoom(start, end) {
    try {
      raw = await load(start, end);
      plot.setData(shown(raw));
    } catch (error) { hint.textContent = String(error.message || error); }
  }

  function build() {
    const yValues = (u, splits) => {
      const labels = tickLabels(splits);
      box.dataset.yticks = JSON.stringify(labels);
      return labels;
    };
    const options = {
      width, height: 210,
      scales: { x: { time: VIEW.axis === "time" }, y: VIEW.log ? { distr: 3 } : {} },
      axes: [{}, { values: yValues, size: axisSize }],
      legend: { show: runs.length > 1 },
      cursor: { drag: { x: true, y: false, setScale: false } },
      series: [{ label: VIEW.axis }, ...runs.map((run, i) => ({
        label: run.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false },
      }))],
      hooks: {
        draw: [drawMarks],
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const start = u.posToVal(u.select.left, "x");
          const end = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          zoom(start, end);
        }],
      },
    };
    if (plot) plot.destroy();
    plot = new uPlot(options, shown(raw), box);
    plot.over.addEventListener("dblclick", () => zoom());
    box.dataset.ready = "1";
    box.dataset.axis = VIEW.axis;
    box.dataset.log = String(VIEW.log);
  }

  async function rebuild() {
    box.dataset.ready = "0";
    try {
      raw = await load();
      build();
    } catch (error) { hint.textContent = String(error.message || error); box.dataset.ready = "error"; }
  }

  CHARTS.push({ rebuild, redraw: () => { if (plot && raw) { plot.setData(shown(raw)); box.dataset.smoothing = String(VIEW.smoothing); } } });
  rebuild();
}

function metricNames(summary) {
  const names = Object.keys(summary).sort();
  return [names.filter((n) => !n.startsWith("system/")), names.filter((n) => n.startsWith("system/"))];
}

// ---- pages -------------------------------------------------------------------------------

async function runsPage() {
  const form = document.getElementById("filter");
  const table = document.getElementById("runs");
  const where = new URLSearchParams(location.search).get("where") || "";
  form.where.value = where;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.search = form.where.value ? `?where=${encodeURIComponent(form.where.value)}` : "";
  });
  document.getElementById("compare").addEventListener("click", () => {
    const ids = [...table.querySelectorAll("input:checked")].map((box) => box.value);
    if (ids.length) location.href = `/compare?runs=${ids.join(",")}`;
  });
  const runs = await api(`/api/runs${where ? `?where=${encodeURIComponent(where)}` : ""}`);
  const shown = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].filter((n) => !n.startsWith("system/")).sort().slice(0, 6);
  const userTags = (run) => Object.entries(run.tag_values || {}).filter(([k]) => !k.startsWith("mlflow.")).map(([k, v]) => `${k}=${v}`).join(", ");
  fillTable(table, ["", "run", "project", "status", "started", "duration", "anomalies", "checkpoints", "tags", ...shown.map((m) => `${m} (last)`)],
    runs.map((run) => [
      el("td", {}, el("input", { type: "checkbox", value: run.id })),
      el("td", {}, run.parent ? "↳ " : "", el("a", { href: `/runs/${run.id}` }, run.name)),
      run.project,
      el("td", { class: `status-${run.status}` }, run.status),
      fmtTime(run.started), fmtDuration(run.duration_s),
      el("td", { class: run.anomalies ? "num bad" : "num" }, run.anomalies),
      el("td", { class: "num" }, run.checkpoints),
      el("td", { class: "tags" }, userTags(run)),
      ...shown.map((m) => el("td", { class: "num" }, run.metrics[m] ? fmt(run.metrics[m].last) : "")),
    ]));
  table.dataset.ready = "1";
}

async function runPage() {
  const runId = decodeURIComponent(location.pathname.split("/")[2]);
  const run = await api(`/api/runs/${runId}`);
  document.title = `fmforge: ${run.name}`;
  document.getElementById("title").textContent = `${run.name}`;
  document.getElementById("report").href = `/runs/${runId}/report.html`;
  const env = run.environment || {};
  const code = env.code || {};
  document.getElementById("overview").append(el("table", {}, ...[
    ["id", run.id], ["project", run.project],
    ["status", el("span", { class: `status-${run.status}` }, run.status)],
    ["started", fmtTime(run.started)], ["duration", fmtDuration(run.duration_s)],
    ["tags", Object.entries(run.tag_values).map(([k, v]) => `${k}=${v}`).join(", ")],
    ["parent", run.parent ? el("a", { href: `/runs/${run.parent}` }, run.parent) : ""],
    ["children", el("span", {}, ...run.children.flatMap((c, i) => [i ? ", " : "", el("a", { href: `/runs/${c}` }, c)]))],
  ].map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
  fillTable(document.getElementById("lineage"), ["what", "value"], [
    ["base model", run.base_model || ""], ["datasets", run.datasets.join(", ")],
    ["code", code.git_commit ? `${code.git_commit}${code.dirty ? ` + uncommitted ${String(code.uncommitted_hash).slice(0, 12)}` : ""}` : "not a git checkout"],
    ["command", (env.command || []).join(" ")], ["python", `${env.implementation || ""} ${env.python || ""}`],
    ["host", fmt(env.host)],
  ]);
  const flat = {};
  (function flatten(obj, prefix) {
    for (const [k, v] of Object.entries(obj || {})) {
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`); else flat[`${prefix}${k}`] = v;
    }
  })(run.config, "");
  fillTable(document.getElementById("config"), ["key", "value"], Object.keys(flat).sort().map((k) => [k, fmt(flat[k])]));

  const [trainMetrics, systemMetrics] = metricNames(run.summary);
  const marks = { anomalies: run.anomalies, checkpoints: run.checkpoints };
  const series = [{ id: runId, label: run.name }];
  for (const metric of trainMetrics) metricChart(document.getElementById("metrics"), metric, series, marks);
  for (const metric of systemMetrics) metricChart(document.getElementById("system"), metric, series, {});
  if (!systemMetrics.length) document.getElementById("system").append(el("p", { class: "muted" }, "no system metrics"));

  fillTable(document.getElementById("anomalies"), ["step", "metric", "detector", "severity", "value", "evidence"],
    run.anomalies.map((a) => [a.step, a.metric, a.detector, el("td", { class: a.severity === "error" ? "bad" : "" }, a.severity), fmt(a.value), a.evidence]));
  fillTable(document.getElementById("checkpoints"), ["step", "model", "commit", "weights"],
    run.checkpoints.map((c) => [c.step, c.model, el("td", {}, el("code", {}, c.commit.slice(0, 12))),
      el("td", {}, el("a", { href: `#changes-${c.commit}`, class: "changes", onclick: () => weightChanges(c) }, "weight change per layer"))]));
  fillTable(document.getElementById("evals"), ["step", "dataset", "metrics"],
    run.evals.map((e) => [e.step, e.dataset || "", Object.entries(e.metrics).map(([k, v]) => `${k}=${fmt(v)}`).join(", ")]));
  fillTable(document.getElementById("artifacts"), ["file", "size"],
    run.artifacts.map((a) => [el("td", {}, el("a", { href: a.url }, a.path)), el("td", { class: "num" }, fmtBytes(a.size))]));
  fillTable(document.getElementById("samples"), ["step", "inputs", "outputs"],
    run.samples.map((s) => [s.step, el("td", {}, el("pre", {}, fmt(s.inputs))), el("td", {}, el("pre", {}, fmt(s.outputs)))]));
  document.body.dataset.ready = "1";
}

// Per-layer relative weight change of a checkpoint against its parent commit (the registry's diff).
async function weightChanges(checkpoint) {
  const box = document.getElementById("weight-changes");
  box.replaceChildren(el("p", { class: "muted" }, `comparing ${checkpoint.commit.slice(0, 12)} with its parent...`));
  try {
    const report = await api(`/api/models/${encodeURIComponent(checkpoint.model)}/commits/${checkpoint.commit}/changes`);
    const top = Math.max(...report.layers.map((l) => Number(l.relative) || 0), 1e-30);
    box.replaceChildren(
      el("h3", {}, `Weight change per layer: ${report.model}@${report.commit.slice(0, 12)} against ${report.against.slice(0, 12)}`),
      el("p", { class: "muted" }, `${report.counts.changed} tensors changed, ${report.counts.unchanged} unchanged; bar: ||delta|| / ||before|| of the layer`),
      el("div", { class: "bars", id: `changes-${report.commit}`, "data-layers": String(report.layers.length) }, ...report.layers.map((layer) =>
        el("div", { class: "bar-row" }, el("span", {}, layer.layer),
          el("div", {}, el("div", { class: "bar", style: `width:${(100 * (Number(layer.relative) || 0)) / top}%` })),
          el("span", { class: "num" }, fmt(Number(layer.relative)))))));
  } catch (error) { box.replaceChildren(el("p", { class: "error" }, String(error.message || error))); }
}

async function comparePage() {
  const ids = (new URLSearchParams(location.search).get("runs") || "").split(",").filter(Boolean);
  if (ids.length < 1) throw new Error("choose runs to compare on the runs page");
  const runs = await Promise.all(ids.map((id) => api(`/api/runs/${id}`)));
  const flats = runs.map((run) => {
    const flat = {};
    (function flatten(obj, prefix) {
      for (const [k, v] of Object.entries(obj || {})) {
        if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`); else flat[`${prefix}${k}`] = v;
      }
    })(run.config, "");
    return flat;
  });
  const keys = [...new Set(flats.flatMap(Object.keys))].sort();
  fillTable(document.getElementById("config"), ["key", ...runs.map((r) => r.name)], keys.map((key) => {
    const values = flats.map((f) => fmt(f[key]));
    const differs = new Set(values).size > 1;
    return [el("td", { class: differs ? "diff" : "" }, key), ...values.map((v) => el("td", { class: differs ? "diff" : "" }, v))];
  }));
  const names = [...new Set(runs.flatMap((r) => Object.keys(r.summary)))].sort();
  fillTable(document.getElementById("summary"), ["metric", ...runs.map((r) => `${r.name} last / min / max`)],
    names.map((name) => [name, ...runs.map((r) => {
      const s = r.summary[name];
      return s ? `${fmt(s.last)} / ${fmt(s.min)} / ${fmt(s.max)}` : "";
    })]));
  const series = runs.map((r) => ({ id: r.id, label: r.name }));
  const [train] = metricNames(Object.fromEntries(names.map((n) => [n, 1])));
  for (const metric of train) metricChart(document.getElementById("metrics"), metric, series.filter((s, i) => runs[i].summary[metric]), { anomalies: runs.flatMap((r) => r.anomalies) });
  document.body.dataset.ready = "1";
}

setupControls();
const PAGES = { runs: runsPage, run: runPage, compare: comparePage };
PAGES[document.body.dataset.page]().catch(showError);
