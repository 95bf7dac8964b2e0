// What both pages share: building DOM, formatting jobs, the API key panel, and starting up.
// Text always goes in as text (textContent, never innerHTML): job params, results and
// output are user data.

import { ApiError, apiKey, forgetApiKey, setApiKey } from "./api.js";

export const ACTIVE_STATES = new Set(["queued", "running"]);

export function $(id) {
  return document.getElementById(id);
}

/** el("a", {href: "/ui/"}, "Jobs") -> <a href="/ui/">Jobs</a> */
export function el(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(properties)) {
    if (name === "class") node.className = value;
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

export function percent(progress) {
  return `${Math.floor(progress * 100)}%`;
}

export function timeElement(iso) {
  if (!iso) return "—";
  return el("time", { dateTime: iso, title: iso }, new Date(iso).toLocaleString());
}

export function took(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  const text = duration(end - Date.parse(job.started_at));
  return job.finished_at ? text : `${text} so far`;
}

function duration(ms) {
  const seconds = Math.max(0, ms) / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Start a page: `load` fetches what it shows, now and again once a key is entered. */
export function startPage(load) {
  setUpKeyPanel(load);
  load();
}

/** Wire the header's key status and the key form; `onKey` runs after a key is entered. */
function setUpKeyPanel(onKey) {
  showKeyStatus();
  $("forget-key").addEventListener("click", () => {
    forgetApiKey();
    window.location.reload();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("key-input").value);
    $("key-input").value = "";
    $("key-panel").hidden = true;
    showKeyStatus();
    onKey();
  });
}

/** If the API refused the key (a 401), ask for one (again) and return true: the page
 * loads nothing more until a key is entered. */
export function askedForKey(error) {
  if (!(error instanceof ApiError && error.status === 401)) return false;
  askForKey(error.message);
  return true;
}

function askForKey(detail) {
  $("key-message").textContent = apiKey()
    ? `The gateway refused this key (${detail}). Enter another one.`
    : "This gateway needs an API key to show its jobs.";
  $("key-panel").hidden = false;
  $("key-input").focus();
}

function showKeyStatus() {
  const key = apiKey();
  $("key-status").hidden = !key;
  // Enough of the key to tell two apart, not enough to use it.
  $("key-hint").textContent = key ? `${key.slice(0, 8)}…` : "";
}

/** Show (or with null, hide) the page's problem line. */
export function showProblem(text) {
  $("problem").hidden = text === null;
  $("problem").textContent = text ?? "";
}
