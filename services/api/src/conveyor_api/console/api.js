// The REST API as the console uses it: every request carries the tab's API key, if any.
// Keys live in sessionStorage (this tab only) and travel in the Authorization header,
// never in a URL, so they stay out of logs, history and Referer headers.

const KEY_ITEM = "conveyor.apiKey";

export class ApiError extends Error {
  constructor(response, detail) {
    super(detail);
    this.status = response.status;
    const retryAfter = Number(response.headers.get("Retry-After"));
    this.retryAfterMs = retryAfter > 0 ? retryAfter * 1000 : null;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_ITEM, key.trim());
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** fetch() with the key; throws ApiError with the API's `detail` unless the answer is 2xx. */
export async function request(path, { method = "GET", headers = {}, signal } = {}) {
  const response = await fetch(path, {
    method,
    headers: { Accept: "application/json", ...authHeaders(), ...headers },
    cache: "no-store",
    signal,
  });
  if (!response.ok) {
    throw new ApiError(response, await problemText(response));
  }
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export async function postJson(path, options = {}) {
  return (await request(path, { ...options, method: "POST" })).json();
}

async function problemText(response) {
  const fallback = `${response.status} ${response.statusText}`.trim();
  try {
    const { detail } = await response.json();
    if (Array.isArray(detail)) {
      // A 422 lists each bad field with its location.
      return detail.map((item) => `${item.loc.join(".")}: ${item.msg}`).join("; ");
    }
    return typeof detail === "string" ? detail : fallback;
  } catch {
    return fallback;
  }
}

/** Save a file the API serves. A plain link cannot send the key, so fetch it and hand the
 * browser the bytes. */
export async function download(path, filename) {
  const blob = await (await request(path, { headers: { Accept: "*/*" } })).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
