// The public API as the console uses it: the same requests, credentials and answers as any
// client's. The credential lives in this tab's session storage only (never a cookie, never the
// URL), so another site cannot ride on it and closing the tab forgets it.

const STORAGE_KEY = "provider.credential";

export function credential() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function remember(value) {
  sessionStorage.setItem(STORAGE_KEY, value);
}

export function forget() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** A refused request: the problem JSON's title and detail, and its field problems. */
export class Problem extends Error {
  constructor(status, body) {
    const title = (body && body.title) || `HTTP ${status}`;
    const detail = (body && body.detail) || "";
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.problems = (body && body.errors) || [];
  }
}

function headers(extra = {}) {
  const value = credential();
  return value ? { Authorization: `Bearer ${value}`, ...extra } : { ...extra };
}

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { title: response.statusText || `HTTP ${response.status}` };
  }
  return new Problem(response.status, body);
}

/** JSON in, JSON out; throws Problem for any answer of 400 and above. */
export async function call(method, path, body, options = {}) {
  const init = { method, headers: headers(options.headers), signal: options.signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new Problem(0, { title: "The service cannot be reached", detail: String(error.message || error) });
  }
  if (!response.ok) throw await problemOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/** Every item of a paginated list (at most `limit`). */
export async function all(path, params = {}, limit = 1000) {
  const items = [];
  let token = null;
  do {
    const query = new URLSearchParams({ page_size: "200", ...params });
    if (token) query.set("page_token", token);
    const page = await call("GET", `${path}?${query}`);
    items.push(...page.items);
    token = page.next_page_token;
  } while (token && items.length < limit);
  return items;
}

export function objectPath(workspace, key) {
  const encoded = key.split("/").map(encodeURIComponent).join("/");
  return `/api/v1/workspaces/${encodeURIComponent(workspace)}/objects/${encoded}`;
}

/** Upload one file with progress (XMLHttpRequest reports upload progress; fetch does not). */
export function upload(workspace, key, file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", objectPath(workspace, key));
    for (const [name, value] of Object.entries(headers({ "Content-Type": "application/octet-stream" }))) {
      request.setRequestHeader(name, value);
    }
    request.upload.onprogress = (event) => onProgress(event.loaded, event.total || file.size);
    request.onload = () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        body = { title: `HTTP ${request.status}` };
      }
      if (request.status >= 400) reject(new Problem(request.status, body));
      else resolve(body);
    };
    request.onerror = () => reject(new Problem(0, { title: "The upload was interrupted" }));
    request.send(file);
  });
}

/** Download an object through the API (with the credential) and hand it to the browser. */
export async function download(workspace, key) {
  const response = await fetch(objectPath(workspace, key), { headers: headers() });
  if (!response.ok) throw await problemOf(response);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = key.split("/").pop();
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/** A text body as it arrives (a followed log), until it ends or `signal` aborts. */
export async function streamText(path, onText, signal) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) throw await problemOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(value);
  }
}

/**
 * Follow the event stream (Server-Sent Events) with the credential in a header, which
 * EventSource cannot send: read with fetch, parse the frames, resume after a dropped connection
 * with Last-Event-ID. Returns a function that stops it.
 */
export function events(params, onEvent, onReconnect = () => {}) {
  const controller = new AbortController();
  let lastId = null;
  let first = true;
  const run = async () => {
    while (!controller.signal.aborted) {
      if (!first) onReconnect();
      first = false;
      try {
        const extra = lastId ? { "Last-Event-ID": lastId } : {};
        const query = new URLSearchParams(params);
        const response = await fetch(`/api/v1/events?${query}`, {
          headers: headers(extra),
          signal: controller.signal,
        });
        if (!response.ok) throw await problemOf(response);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const fields = {};
            for (const line of frame.split("\n")) {
              if (!line || line.startsWith(":")) continue;
              const colon = line.indexOf(":");
              const name = colon < 0 ? line : line.slice(0, colon);
              const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              fields[name] = fields[name] === undefined ? text : `${fields[name]}\n${text}`;
            }
            if (fields.id) lastId = fields.id;
            if (fields.data) onEvent(JSON.parse(fields.data));
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof Problem && error.status >= 400 && error.status < 500) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  run();
  return () => controller.abort();
}
