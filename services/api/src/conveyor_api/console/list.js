// The job list: GET /v1/jobs with the filters in the page's URL, refreshed every few
// seconds while the tab is visible. Rows are updated in place, so a focused link or a
// screen reader's position survives a refresh.

import { getJson } from "./api.js";
import {
  $,
  askedForKey,
  el,
  percent,
  shortId,
  showProblem,
  startPage,
  stateBadge,
  timeElement,
  took,
} from "./view.js";

const REFRESH_MS = 3000;
const PAGE_SIZE = 50;

let rowsById = new Map();
let timer = null;
let pending = null; // the AbortController of the refresh in flight

function filters() {
  const query = new URLSearchParams(window.location.search);
  return {
    type: query.get("type") ?? "",
    state: query.get("state") ?? "",
    cursor: query.get("cursor") ?? "",
  };
}

function consoleUrl({ type, state, cursor }) {
  const query = new URLSearchParams();
  if (type) query.set("type", type);
  if (state) query.set("state", state);
  if (cursor) query.set("cursor", cursor);
  const text = query.toString();
  return text ? `/ui/?${text}` : "/ui/";
}

function jobsPath({ type, state, cursor }) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (type) query.set("type", type);
  if (state) query.set("state", state);
  if (cursor) query.set("cursor", cursor);
  return `/v1/jobs?${query}`;
}

async function refresh() {
  clearTimeout(timer);
  pending?.abort();
  pending = new AbortController();
  try {
    const page = await getJson(jobsPath(filters()), { signal: pending.signal });
    showProblem(null);
    render(page);
    $("refreshed").textContent =
      `Updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s while visible.`;
  } catch (error) {
    if (error.name === "AbortError") return; // a newer refresh took over
    if (askedForKey(error)) {
      rowsById = new Map();
      $("job-rows").replaceChildren();
      $("jobs").hidden = true;
      $("empty").hidden = true;
      return; // nothing to poll until a key is entered
    }
    showProblem(`Could not load the jobs: ${error.message}`);
  }
  if (document.visibilityState === "visible") timer = setTimeout(refresh, REFRESH_MS);
}

function render(page) {
  const rows = page.items.map(upsertRow);
  rowsById = new Map(page.items.map((job, index) => [job.id, rows[index]]));
  const body = $("job-rows");
  rows.forEach((row, index) => {
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] ?? null);
  });
  while (body.rows.length > rows.length) body.lastElementChild.remove();

  const { type, state, cursor } = filters();
  $("jobs").hidden = rows.length === 0;
  $("empty").hidden = rows.length > 0;
  $("empty").textContent =
    type || state
      ? "No jobs match these filters."
      : "No jobs yet. Submit one with POST /v1/jobs or the conveyor CLI.";
  $("older").hidden = !page.next_cursor;
  $("older").href = consoleUrl({ type, state, cursor: page.next_cursor });
  $("newest").hidden = !cursor;
  $("newest").href = consoleUrl({ type, state });
}

function upsertRow(job) {
  const row = rowsById.get(job.id) ?? newRow(job);
  const [, , stateCell, progressCell, , tookCell] = row.cells;
  if (stateCell.textContent !== job.state) stateCell.replaceChildren(stateBadge(job.state));
  const [bar, label] = progressCell.children;
  bar.value = job.progress;
  label.textContent = percent(job.progress);
  tookCell.textContent = took(job);
  return row;
}

function newRow(job) {
  const name = shortId(job.id);
  return el(
    "tr",
    { "data-job-id": job.id },
    el(
      "td",
      {},
      el("a", { href: `/ui/jobs/${job.id}`, title: job.id }, el("code", {}, name)),
      el(
        "button",
        { type: "button", class: "copy-id", "aria-label": `Copy the full id of job ${name}` },
        "copy",
      ),
    ),
    el("td", {}, job.type),
    el("td", {}),
    el(
      "td",
      { class: "progress-cell" },
      el("progress", { max: 1, "aria-label": `Progress of job ${name}` }),
      el("span", {}),
    ),
    el("td", {}, timeElement(job.created_at)),
    el("td", {}),
  );
}

function showFilters() {
  const { type, state } = filters();
  const typeSelect = $("filter-type");
  if (type && ![...typeSelect.options].some((option) => option.value === type)) {
    typeSelect.append(el("option", { value: type }, type));
  }
  typeSelect.value = type;
  $("filter-state").value = state;
}

async function loadJobTypes() {
  try {
    for (const jobType of await getJson("/v1/job-types")) {
      if (![...$("filter-type").options].some((option) => option.value === jobType.name)) {
        $("filter-type").append(el("option", { value: jobType.name }, jobType.name));
      }
    }
  } catch (error) {
    showProblem(`Could not load the job types: ${error.message}`);
  }
  showFilters();
}

function applyFilters() {
  const url = consoleUrl({ type: $("filter-type").value, state: $("filter-state").value });
  window.history.pushState(null, "", url); // a new filter starts again at the newest jobs
  refresh();
}

// The list shows 8 characters of each id; the button beside it copies all 36.
$("job-rows").addEventListener("click", async (event) => {
  const button = event.target.closest(".copy-id");
  if (!button) return;
  const id = button.closest("tr").dataset.jobId;
  try {
    await navigator.clipboard.writeText(id);
    button.textContent = "copied";
  } catch {
    window.prompt("Copy the job id:", id); // no clipboard access: show it to select
  }
  setTimeout(() => (button.textContent = "copy"), 1500);
});

$("filters").addEventListener("change", applyFilters);
$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters();
});
window.addEventListener("popstate", () => {
  showFilters();
  refresh();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refresh();
  else {
    clearTimeout(timer);
    pending?.abort();
  }
});

showFilters();
loadJobTypes();
startPage(refresh);
