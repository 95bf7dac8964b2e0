// One job, live: its event stream (GET /v1/jobs/{id}/events) starts with a snapshot of
// the job, then brings each state change, progress report and output line as it happens,
// and ends after the final state. A dropped stream resumes with Last-Event-ID.

import { ApiError, apiKey, download, getJson, request } from "./api.js";
import { readEvents } from "./sse.js";
import {
  $,
  ACTIVE_STATES,
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

const MAX_OUTPUT_LINES = 1000;
const RETRY_MS = { first: 1000, most: 15000 };
const EVENT_KINDS = new Set(["snapshot", "state", "progress", "output"]);

const jobId = decodeURIComponent(window.location.pathname.split("/").pop());
const jobPath = `/v1/jobs/${encodeURIComponent(jobId)}`;

let job = null; // the job as GET /v1/jobs/{id} shows it, kept current by the events
let lastEventId = null;
let following = null; // the AbortController of the stream being followed

async function follow() {
  following?.abort();
  const controller = new AbortController();
  following = controller;
  let retryMs = RETRY_MS.first;
  while (!controller.signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      const response = await request(`${jobPath}/events`, { headers, signal: controller.signal });
      // 204: the final event was received already (the connection dropped right after it).
      if (response.status !== 204) {
        showLive("Live");
        for await (const event of readEvents(response.body)) {
          apply(event);
          retryMs = RETRY_MS.first;
        }
      }
      if (job === null || !ACTIVE_STATES.has(job.state)) {
        // The stream ended with the final state. State events do not carry the job's
        // artifacts or timestamps: read the finished job once.
        await loadJob();
        showLive("");
        return;
      }
      // Closed before the end (a gateway restart, a proxy's timeout): resume below.
    } catch (error) {
      if (error.name === "AbortError") return;
      if (askedForKey(error)) {
        showLive("");
        return; // until a key is entered
      }
      if (error instanceof ApiError && [404, 422].includes(error.status)) {
        showNotFound();
        return;
      }
      // A 503 (this gateway holds its most streams) or a network error.
      if (lastEventId === null) await loadJob().catch(() => {});
      if (error instanceof ApiError && error.retryAfterMs) retryMs = error.retryAfterMs;
    }
    showLive("Reconnecting…");
    await sleep(retryMs, controller.signal);
    retryMs = Math.min(retryMs * 2, RETRY_MS.most);
  }
}

function apply({ id, event, data }) {
  lastEventId = id;
  if (!EVENT_KINDS.has(event)) return; // a kind of a later release: skip it
  const payload = JSON.parse(data);
  if (event === "snapshot") {
    job = payload;
  } else if (job === null) {
    return; // a resumed stream always follows a snapshot; nothing to update yet
  } else if (event === "state") {
    job.state = payload.state;
    job.attempts = payload.attempts;
    job.error = payload.error;
    if ("result" in payload) job.result = payload.result;
    if (payload.state === "running") job.started_at ??= payload.at;
    if (!ACTIVE_STATES.has(payload.state)) job.finished_at ??= payload.at;
  } else if (event === "progress") {
    job.progress = payload.progress;
  } else if (event === "output") {
    appendOutput(payload);
    return;
  }
  render();
}

async function loadJob() {
  job = await getJson(jobPath);
  render();
}

function render() {
  showProblem(null);
  $("job").hidden = false;
  document.title = `Job ${shortId(job.id)} · ${job.state} · Conveyor`;
  $("job-short-id").textContent = shortId(job.id);
  $("job-type").textContent = job.type;
  $("job-state").replaceChildren(stateBadge(job.state));
  $("progress").value = job.progress;
  $("progress-text").textContent = percent(job.progress);
  $("job-id").textContent = job.id;
  $("job-attempts").textContent = String(job.attempts);
  $("job-created").replaceChildren(timeElement(job.created_at));
  $("job-started").replaceChildren(timeElement(job.started_at));
  $("job-finished").replaceChildren(timeElement(job.finished_at));
  $("job-took").textContent = took(job);
  $("job-params").textContent = JSON.stringify(job.params, null, 2);
  renderCancel();
  $("error-section").hidden = !job.error;
  $("job-error").textContent = job.error ?? "";
  renderResult(job.result);
  renderArtifacts(job.artifacts);
}

function renderCancel() {
  const active = ACTIVE_STATES.has(job.state);
  $("cancel").hidden = !active;
  $("cancel").disabled = job.cancel_requested;
  if (!active) $("cancel-note").textContent = "";
  else if (job.cancel_requested) {
    $("cancel-note").textContent = "Cancel requested: the worker is stopping the job.";
  }
}

function renderResult(result) {
  $("result-section").hidden = result === null || result === undefined;
  if ($("result-section").hidden) return;
  // The top-level numbers and strings (accuracy, exit code, ...) at a glance; all in JSON.
  const plain = Object.entries(result).filter(([, value]) => typeof value !== "object");
  $("result-summary").replaceChildren(
    ...plain.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, formatValue(value))]),
  );
  $("job-result").textContent = JSON.stringify(result, null, 2);
}

function formatValue(value) {
  if (typeof value === "number" && !Number.isInteger(value)) {
    return el("data", { value: String(value) }, String(Number(value.toPrecision(4))));
  }
  if (value === "") return el("span", { class: "hint" }, "(empty)");
  if (typeof value === "string" && value.includes("\n")) return el("pre", {}, value);
  return String(value);
}

function renderArtifacts(names) {
  $("artifacts-section").hidden = names.length === 0;
  const shown = [...$("artifacts").querySelectorAll("a")].map((link) => link.download);
  if (shown.join("\n") === names.join("\n")) return;
  $("artifacts").replaceChildren(
    ...names.map((name) =>
      el(
        "li",
        {},
        el("a", { href: `${jobPath}/artifacts/${encodeURIComponent(name)}`, download: name }, name),
      ),
    ),
  );
}

function appendOutput({ stream, line }) {
  $("output-section").hidden = false;
  const output = $("output");
  const followingTail = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
  output.append(el("span", { class: stream }, `${line}\n`));
  while (output.childElementCount > MAX_OUTPUT_LINES) output.firstElementChild.remove();
  if (followingTail) output.scrollTop = output.scrollHeight;
}

function showLive(text) {
  $("live").textContent = text;
}

function showNotFound() {
  showLive("");
  $("job").hidden = true;
  document.title = "No such job · Conveyor";
  showProblem(`No job ${jobId} here: it does not exist, or it belongs to another API key.`);
}

async function cancel() {
  $("cancel").disabled = true;
  try {
    job = await (await request(`${jobPath}/cancel`, { method: "POST" })).json();
    render();
  } catch (error) {
    $("cancel").disabled = false;
    if (!askedForKey(error)) $("cancel-note").textContent = `Not cancelled: ${error.message}`;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const wake = () => {
      clearTimeout(timer);
      resolve();
    };
    signal.addEventListener("abort", wake, { once: true });
  });
}

$("cancel").addEventListener("click", cancel);
$("artifacts").addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (!link || !apiKey()) return; // without a key the plain link works
  event.preventDefault();
  download(link.href, link.download).catch((error) => {
    showProblem(`Could not download ${link.download}: ${error.message}`);
  });
});
// A running job's "took" keeps counting between events.
setInterval(() => {
  if (job?.state === "running") $("job-took").textContent = took(job);
}, 1000);

startPage(follow);
