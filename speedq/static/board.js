// The leaderboard and comparisons of runs: pages of dashboard.html, built on its helpers (el, get,
// duration, stateCell, jobLink) and registered in its PAGES. Plain JS, no build step.
"use strict";

const PICKED_KEY = "speedq-picked";  // the runs picked for a comparison, kept while the tab lives
const MAX_COMPARED = 12;
const CLIP_FIRST = 0.05;  // as the API takes them (schemas/queries.py)
const COLOURS = ["#0a7ea4", "#cf222e", "#1a7f37", "#a03fb5", "#b58100", "#0550ae",
                 "#bc4c00", "#116329", "#8250df", "#57606a", "#e16f24", "#2da44e"];

// -- picking runs: a checkbox by each job, on the jobs list and the leaderboard ---------------

const picked = new Set(JSON.parse(sessionStorage.getItem(PICKED_KEY) || "[]"));

function comparePath(ids, x = "step") {
  return `#/compare?jobs=${[...ids].join(",")}${x === "time" ? "&x=time" : ""}`;
}

function showPicked() {
  sessionStorage.setItem(PICKED_KEY, JSON.stringify([...picked]));
  const link = document.getElementById("compare-link");
  link.textContent = `Compare (${picked.size})`;
  link.setAttribute("href", picked.size ? comparePath(picked) : "#/compare");
  for (const box of document.querySelectorAll("input.pick")) box.checked = picked.has(box.dataset.job);
}

function pickBox(jobId) {
  const box = el("input", { type: "checkbox", class: "pick", "data-job": jobId, title: "pick for Compare" });
  box.checked = picked.has(jobId);
  box.addEventListener("change", () => {
    if (box.checked && picked.size >= MAX_COMPARED) {
      box.checked = false;
      document.getElementById("error").textContent = `At most ${MAX_COMPARED} runs at once.`;
      return;
    }
    if (box.checked) picked.add(jobId); else picked.delete(jobId);
    showPicked();
  });
  return box;
}

// -- how figures look: runTime, count, dollars and RESULT_FIGURES are dashboard.html's ---------

function optionsText(args) {
  if (args === null || args === undefined) return "(hidden)";
  const parts = Object.entries(args).map(([k, v]) => (v === true ? k : `${k}=${v}`));
  return parts.join(" ") || "-";
}

// -- the leaderboard ----------------------------------------------------------------------------


function filtersForm(board) {
  const model = el("input", { name: "model", size: 5, placeholder: "d24", value: board.model || "" });
  const team = el("input", { name: "team", size: 12, placeholder: "any team", value: board.team || "" });
  const form = el("form", { class: "filters", id: "board-filters" },
    el("label", {}, "Model ", model), el("label", {}, "Team ", team), el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", event => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (model.value.trim()) query.set("model", model.value.trim());
    if (team.value.trim()) query.set("team", team.value.trim());
    document.activeElement.blur();
    location.hash = `#/leaderboard${query.toString() ? `?${query}` : ""}`;
  });
  return form;
}

function boardTable(id, headers, rows, cells, empty) {
  const table = el("table", { id },
    el("thead", {}, el("tr", {}, ...headers.map(h => el("th", {}, h)))));
  const body = el("tbody");
  for (const row of rows) body.append(el("tr", { "data-job": row.job }, ...cells(row).map(c => el("td", {}, c))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, empty)));
  table.append(body);
  return table;
}

function renderLeaderboard(board) {
  const time = boardTable("time-to-gpt2",
    ["#", "Time", "Team", "Model", "Repo@commit", "Options", "CORE", "Val bpb", "Cost", "Job"],
    board.time_to_gpt2,
    row => [el("span", {}, pickBox(row.job), row.rank), runTime(row.results.training_time_s), row.team, row.model,
            row.source, optionsText(row.train_args), fixed(row.results.core_metric, 4),
            fixed(row.results.min_val_bpb, 4), dollars(row.results.cost_usd), jobLink(row.job)],
    "No run has beaten GPT-2's CORE yet.");
  const bpb = boardTable("best-bpb",
    ["Model", "Val bpb", "Team", "Repo@commit", "Options", "GPU", "Time", "Cost", "Job"],
    board.best_bpb,
    row => [el("span", {}, pickBox(row.job), row.model), fixed(row.results.min_val_bpb, 4), row.team, row.source,
            optionsText(row.train_args), row.gpu, runTime(row.results.training_time_s), dollars(row.results.cost_usd),
            jobLink(row.job)],
    "No full run with a val bpb yet.");
  const scope = [board.model, board.team && `team ${board.team}`].filter(Boolean).join(", ");
  return [
    el("section", { id: "leaderboard" },
      el("h2", {}, `Time to GPT-2${scope ? ` (${scope})` : ""}`),
      el("p", { class: "muted" }, `Runs whose CORE beats GPT-2's ${board.gpt2_core} on one 8xH100 node, fastest first. ` +
        "Tick runs to compare their loss curves."),
      filtersForm(board), time),
    el("section", {}, el("h2", {}, "Best val bpb per depth"),
      el("p", { class: "muted" }, "The lowest minimum validation bpb of any full run of each model."), bpb),
  ];
}

PAGES.push({
  pattern: /^#\/leaderboard(?:\?(.*))?$/,
  async render(match) {
    const query = new URLSearchParams(match[1] || "");
    return renderLeaderboard(await get(`/dashboard/api/leaderboard?${query}`));
  },
});

// -- comparing runs: loss curves overlaid, results side by side ---------------------------------

// x of a point: its step, or seconds since the run's first timed point (wall time).
function curve(run, x) {
  const points = run.loss || [];
  if (x === "step") return points.map(p => [p.step, p.loss]);
  const timed = points.filter(p => p.t !== null && p.t !== undefined);
  return timed.map(p => [p.t - timed[0].t, p.loss]);
}

function overlay(runs, x) {
  const W = 900, H = 320, L = 52, R = 16, T = 10, B = 28;
  const curves = runs.map(run => curve(run, x));
  const all = curves.flat();
  if (all.length < 2) return el("p", { class: "muted", id: "compare-plot" }, "No loss curves to draw yet.");
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const [x0, x1, y0] = [Math.min(...xs), Math.max(...xs), Math.min(...ys)];
  // The first steps' loss (about 11 at step 0) would flatten where runs differ: the axis starts
  // at the highest loss after the first 5% of the range, and earlier points are cut at the top.
  const later = all.filter(p => p[0] >= x0 + CLIP_FIRST * (x1 - x0)).map(p => p[1]);
  const y1 = Math.max(y0 + 1e-9, later.length > 1 ? Math.max(...later) : Math.max(...ys));
  const px = v => L + (W - L - R) * (v - x0) / Math.max(1e-9, x1 - x0);
  const py = v => T + (H - T - B) * (1 - (Math.min(v, y1) - y0) / (y1 - y0));
  const label = v => (x === "step" ? `step ${Math.round(v)}` : duration(v));
  const svg = el("svg", { id: "compare-plot", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                          "aria-label": `loss by ${x === "step" ? "step" : "wall time"} of ${runs.length} runs` },
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }),
    el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }),
    el("text", { x: L - 6, y: T + 10, "text-anchor": "end" }, y1.toFixed(2)),
    el("text", { x: L - 6, y: H - B, "text-anchor": "end" }, y0.toFixed(2)),
    el("text", { x: L, y: H - 8 }, label(x0)),
    el("text", { x: W - R, y: H - 8, "text-anchor": "end" }, label(x1)));
  curves.forEach((points, i) => {
    if (points.length < 2) return;
    const d = points.map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
    svg.append(el("path", { class: "curve", "data-job": runs[i].job, d, fill: "none",
                            stroke: COLOURS[i % COLOURS.length], "stroke-width": 1.8 }));
  });
  return svg;
}

function legend(runs, x) {
  return el("p", { class: "legend", id: "compare-legend" }, ...runs.map((run, i) => {
    const n = curve(run, x).length;
    return el("span", { "data-job": run.job },
      el("i", { style: `background: ${COLOURS[i % COLOURS.length]}` }), jobLink(run.job),
      ` ${run.team} ${run.model}`, n < 2 ? " (no loss curve yet)" : "");
  }));
}

const metric = f => run => (run.results ? f(run.results) : "-");
// One row per figure, as `speedq compare` prints them: who ran it, its results, what was run.
const COMPARED = [
  ["Team", run => run.team],
  ["State", run => stateCell(run.state)],
  ["Model", run => run.model],
  ["GPU", run => run.gpu],
  ...RESULT_FIGURES.map(([name, shown]) => [name, metric(shown)]),
  ["Repo@commit", run => run.source],
  ["Options", run => optionsText(run.train_args)],
];

function resultsTable(runs) {
  return el("table", { id: "compare-table" },
    el("thead", {}, el("tr", {}, el("th", {}, ""), ...runs.map(run => el("th", {}, jobLink(run.job))))),
    el("tbody", {}, ...COMPARED.map(([name, cell]) =>
      el("tr", {}, el("th", {}, name), ...runs.map(run => el("td", {}, cell(run)))))));
}

function renderCompare(comparison, ids, x) {
  const toggle = el("p", { class: "toggle", id: "x-toggle" },
    el("a", { href: comparePath(ids, "step"), id: "x-step", class: x === "step" ? "on" : "" }, "by step"),
    el("a", { href: comparePath(ids, "time"), id: "x-time", class: x === "time" ? "on" : "" }, "by wall time"));
  return [
    el("section", { id: "compare" }, el("h2", {}, `Loss of ${ids.join(", ")} by ${x === "step" ? "step" : "wall time"}`),
      toggle, overlay(comparison.runs, x), legend(comparison.runs, x)),
    el("section", {}, el("h2", {}, "Results"), resultsTable(comparison.runs)),
  ];
}

PAGES.push({
  pattern: /^#\/compare(?:\?(.*))?$/,
  async render(match) {
    const query = new URLSearchParams(match[1] || "");
    const ids = (query.get("jobs") || "").split(",").filter(Boolean);
    if (!ids.length) {
      return [el("section", { id: "compare" }, el("h2", {}, "Compare runs"),
        el("p", { class: "muted" }, "Tick runs on the jobs list or the leaderboard, then follow Compare above."))];
    }
    const asked = new URLSearchParams(ids.map(id => ["jobs", id]));
    const x = query.get("x") === "time" ? "time" : "step";
    return renderCompare(await get(`/dashboard/api/compare?${asked}`), ids, x);
  },
});

function showPage() {
  const here = location.hash.startsWith("#/leaderboard") ? "nav-board"
    : location.hash.startsWith("#/compare") ? "compare-link" : "nav-jobs";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("here", link.id === here);
}

window.addEventListener("hashchange", showPage);
window.addEventListener("DOMContentLoaded", () => { showPage(); showPicked(); });
