// The console: one page, hash routes, every view built from the public API with the signed-in
// credential. Nothing here reaches the service any other way than a client would.

import * as api from "./api.js";
import { bytes, copyButton, field, guarded, h, parseLabels, problemBox, stateBadge, table, when } from "./ui.js";

const FINAL = new Set(["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"]);
const LISTED = 1000; // objects listed at most under one folder
const ID = /^[a-z]+_[0-9a-z]{26}$/; // the ids the service makes: nothing else goes into a request path
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const announcer = document.getElementById("announcer");
let me = null; // GET /api/v1/me of the signed-in credential
// Each route gets a generation; what a view started (streams, timers) is stopped when the
// route changes, even when the view registers it after an await that outlived it.
let generation = 0;
let cleanups = [];

/** Called when a view starts: returns `register(stop)`, which stops `stop` when the view is
 * left, or at once when it was left already. */
function onLeave() {
  const mine = generation;
  return (stop) => {
    if (mine !== generation) stop();
    else cleanups.push(stop);
  };
}

function announce(text) {
  announcer.textContent = text;
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** Start a page; returns its own container, so that a view that was left writes nowhere. */
function page(title, ...children) {
  document.title = `${title} · provider console`;
  const heading = h("h1", { tabindex: "-1" }, title);
  const view = h("div", { class: "view" }, heading, ...children.filter(Boolean));
  main.replaceChildren(view);
  heading.focus();
  return view;
}

// --- sign-in ------------------------------------------------------------------------------------

function signInView() {
  const input = h("input", {
    type: "password",
    name: "credential",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const errors = h("div");
  const form = h(
    "form",
    { class: "card narrow" },
    field("API key or workspace token", input, "Kept in this browser tab only, until you sign out or close it."),
    errors,
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    api.remember(input.value.trim());
    const ok = await guarded(errors, async () => {
      me = await api.call("GET", "/api/v1/me");
      return true;
    });
    if (!ok) {
      api.forget();
      me = null;
      input.focus();
      return;
    }
    renderNav();
    go(home());
  });
  page("Sign in", form);
}

function home() {
  if (!me) return "#/signin";
  if (me.workspace_id) return `#/workspaces/${me.workspace_id}`;
  return me.role === "admin" ? "#/tenants" : "#/workspaces";
}

function renderNav() {
  const links = [];
  if (me) {
    if (!me.workspace_id) links.push(["#/workspaces", "Workspaces"]);
    else links.push([`#/workspaces/${me.workspace_id}`, "Workspace"]);
    links.push(["#/run", "Run"], ["#/executions", "Executions"], ["#/subscriptions", "Subscriptions"]);
    if (me.role === "admin") {
      links.push(["#/tenants", "Tenants"], ["#/assets", "Assets"], ["#/edc", "Transfers"], ["#/status", "Status"]);
    }
  }
  const signOut = h("button", { type: "button", class: "secondary" }, "Sign out");
  signOut.addEventListener("click", () => {
    api.forget();
    me = null;
    renderNav();
    go("#/signin");
    announce("Signed out");
  });
  nav.replaceChildren(
    h(
      "div",
      { class: "nav-inner" },
      h("ul", {}, links.map(([href, label]) => h("li", {}, h("a", { href }, label)))),
      me ? h("p", { class: "who" }, `${me.tenant.display_name} (${me.role}${me.workspace_id ? ", workspace token" : ""})`) : null,
      me ? signOut : null,
    ),
  );
}

// --- workspaces ---------------------------------------------------------------------------------

async function workspacesView() {
  const errors = h("div");
  const list = h("div");
  const name = h("input", { name: "name", maxlength: "200" });
  const labels = h("input", { name: "labels", placeholder: "project=study, owner=alice" });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "New workspace"),
    field("Name", name),
    field("Labels", labels, "Optional: KEY=VALUE pairs separated by commas."),
    h("button", { type: "submit" }, "Create workspace"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const made = await guarded(errors, async () =>
      api.call("POST", "/api/v1/workspaces", { name: name.value, labels: parseLabels(labels.value) }),
    );
    if (made) go(`#/workspaces/${made.id}`);
  });
  page("Workspaces", errors, list, form);
  await guarded(errors, async () => {
    const items = await api.all("/api/v1/workspaces");
    list.replaceChildren(
      table(
        "Workspaces",
        ["Name", "Id", "Usage", "Created", ""],
        items.map((ws) => [
          h("a", { href: `#/workspaces/${ws.id}` }, ws.name || "(no name)"),
          h("code", {}, ws.id),
          `${bytes(ws.usage.bytes)} of ${bytes(ws.quota.bytes)}, ${ws.usage.objects} objects`,
          when(ws.created_at),
          deleteWorkspaceButton(ws, errors),
        ]),
        "No workspaces yet. Create one below, then upload the data to run on.",
      ),
    );
  });
}

function deleteWorkspaceButton(ws, errors) {
  const button = h("button", { type: "button", class: "danger" }, "Delete");
  button.setAttribute("aria-label", `Delete workspace ${ws.name || ws.id}`);
  button.addEventListener("click", async () => {
    if (!confirm(`Delete ${ws.name || ws.id} with all its data and tokens?`)) return;
    const done = await guarded(errors, () => api.call("DELETE", `/api/v1/workspaces/${ws.id}`));
    if (done !== undefined) {
      announce("Workspace deleted");
      go("#/workspaces");
    }
  });
  return button;
}

async function workspaceView(id, query) {
  const errors = h("div");
  const view = page("Workspace", errors);
  const ws = await guarded(errors, () => api.call("GET", `/api/v1/workspaces/${id}`));
  if (!ws) return;
  const heading = view.querySelector("h1");
  heading.textContent = ws.name ? `Workspace ${ws.name}` : "Workspace";
  const objects = h("section", { "aria-labelledby": "objects-heading" });
  const tokens = h("section", { "aria-labelledby": "tokens-heading" });
  const imports = h("section", { "aria-labelledby": "imports-heading" });
  const meta = h("p", { class: "meta" });
  const describe = (current) =>
    meta.replaceChildren(
      h("code", {}, current.id),
      ` · ${current.state} · ${bytes(current.usage.bytes)} of ${bytes(current.quota.bytes)} · ${current.usage.objects} objects · `,
      h("a", { href: `#/run?workspace=${current.id}` }, "Run an asset on it"),
      " · ",
      h("a", { href: `#/executions?workspace=${current.id}` }, "Its executions"),
    );
  describe(ws);
  const changed = async () => {
    try {
      describe(await api.call("GET", `/api/v1/workspaces/${id}`));
    } catch {
      /* the listing shows what there is */
    }
  };
  view.append(
    meta,
    objects,
    imports,
    ...(me.workspace_id ? [] : [tokens, credentialsSection(ws)]),
  );
  await objectsSection(objects, ws, query.get("prefix") || "", changed);
  importsSection(imports, ws);
  if (!me.workspace_id) tokensSection(tokens, ws);
}

async function objectsSection(section, ws, prefix, changed) {
  const errors = h("div");
  const listing = h("div");
  const crumbs = h("nav", { "aria-label": "Folder" });
  const progress = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Upload progress" });
  const progressText = h("p", { class: "hint", "aria-live": "polite" });
  const files = h("input", { type: "file", multiple: true });
  const folder = h("input", { type: "file", webkitdirectory: true, multiple: true });
  const drop = h(
    "div",
    { class: "drop", tabindex: "0" },
    h("p", {}, "Drop files or folders here, or choose them:"),
    field("Files", files),
    field("A folder", folder),
    progress,
    progressText,
  );
  section.replaceChildren(h("h2", { id: "objects-heading" }, "Objects"), crumbs, errors, listing, drop);

  const parts = prefix.split("/").filter(Boolean);
  const links = [h("a", { href: `#/workspaces/${ws.id}` }, "(root)")];
  parts.forEach((part, index) => {
    const sub = `${parts.slice(0, index + 1).join("/")}/`;
    links.push(" / ", h("a", { href: `#/workspaces/${ws.id}?prefix=${encodeURIComponent(sub)}` }, part));
  });
  crumbs.replaceChildren(...links);

  const refresh = async () => {
    await guarded(errors, async () => {
      const items = await api.all(`/api/v1/workspaces/${ws.id}/objects`, { prefix }, LISTED);
      const folders = new Set();
      const here = [];
      for (const item of items) {
        const rest = item.key.slice(prefix.length);
        const slash = rest.indexOf("/");
        if (slash >= 0) folders.add(rest.slice(0, slash + 1));
        else here.push(item);
      }
      const rows = [...folders].sort().map((name) => [
        h("a", { href: `#/workspaces/${ws.id}?prefix=${encodeURIComponent(prefix + name)}` }, `${name}`),
        "folder",
        "",
        "",
      ]);
      for (const item of here) {
        const get = h("button", { type: "button", class: "secondary" }, "Download");
        get.setAttribute("aria-label", `Download ${item.key}`);
        get.addEventListener("click", () => guarded(errors, () => api.download(ws.id, item.key)));
        const remove = h("button", { type: "button", class: "danger" }, "Delete");
        remove.setAttribute("aria-label", `Delete ${item.key}`);
        remove.addEventListener("click", async () => {
          if (!confirm(`Delete ${item.key}?`)) return;
          await guarded(errors, () => api.call("DELETE", api.objectPath(ws.id, item.key)));
          await refresh();
          changed();
        });
        rows.push([item.key.slice(prefix.length), bytes(item.size), when(item.last_modified), h("span", {}, get, " ", remove)]);
      }
      listing.replaceChildren(
        table("Objects", ["Name", "Size", "Modified", ""], rows, "Nothing here yet. Upload files or folders below."),
        items.length >= LISTED ? h("p", { class: "hint" }, `Only the first ${LISTED} objects under this folder are shown; open a sub-folder, or list them with provider ls.`) : null,
      );
    });
  };

  const send = async (entries) => {
    if (!entries.length) return;
    const total = entries.reduce((sum, entry) => sum + entry.file.size, 0) || 1;
    const done = new Map();
    progress.hidden = false;
    progress.value = 0;
    let failed = 0;
    for (const entry of entries) {
      try {
        await api.upload(ws.id, prefix + entry.path, entry.file, (loaded) => {
          done.set(entry.path, loaded);
          const sum = [...done.values()].reduce((a, b) => a + b, 0);
          progress.value = sum / total;
          progressText.textContent = `Uploading ${entry.path}: ${bytes(sum)} of ${bytes(total)}`;
        });
        done.set(entry.path, entry.file.size);
      } catch (error) {
        failed += 1;
        errors.append(problemBox(error));
      }
    }
    progress.value = 1;
    progressText.textContent = `${entries.length - failed} of ${entries.length} files uploaded`; // a live region
    await refresh();
    changed();
  };

  files.addEventListener("change", () => send([...files.files].map((file) => ({ file, path: file.name }))));
  folder.addEventListener("change", () =>
    send([...folder.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))),
  );
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const entries = [];
    const walk = async (entry, path) => {
      if (entry.isFile) {
        const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
        entries.push({ file, path: path + file.name });
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
          if (!batch.length) break;
          for (const child of batch) await walk(child, `${path}${entry.name}/`);
        }
      }
    };
    const items = [...event.dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry());
    if (items.every(Boolean)) {
      for (const item of items) await walk(item, "");
    } else {
      for (const file of event.dataTransfer.files) entries.push({ file, path: file.name });
    }
    send(entries);
  });
  await refresh();
}

function importsSection(section, ws) {
  const errors = h("div");
  const list = h("div");
  const url = h("input", { type: "url", required: true, placeholder: "https://other-provider.example/data.csv" });
  const key = h("input", { required: true, placeholder: "data/remote.csv" });
  const form = h("form", { class: "inline" }, field("Source URL", url), field("Object key", key), h("button", { type: "submit" }, "Import"));
  let timer = null;
  const leave = onLeave();
  const refresh = async () => {
    const items = await guarded(errors, () => api.all(`/api/v1/workspaces/${ws.id}/imports`, {}, 50));
    if (!items) return;
    list.replaceChildren(
      table(
        "Imports",
        ["Key", "State", "Progress", "Error"],
        items.map((item) => [
          item.target_key,
          item.state,
          h("span", {}, h("progress", { max: item.bytes_total || 1, value: item.bytes_done, "aria-label": `Import of ${item.target_key}` }), ` ${bytes(item.bytes_done)}`),
          item.error || "",
        ]),
        "No imports. Pull data from another provider's data plane with a URL.",
      ),
    );
    clearTimeout(timer);
    if (items.some((item) => item.state === "queued" || item.state === "running") && section.isConnected) {
      timer = setTimeout(refresh, 1000);
      leave(() => clearTimeout(timer));
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await guarded(errors, () => api.call("POST", `/api/v1/workspaces/${ws.id}/imports`, { source_url: url.value, target_key: key.value }));
    refresh();
  });
  section.replaceChildren(h("h2", { id: "imports-heading" }, "Imports"), errors, list, form);
  refresh();
}

function tokensSection(section, ws) {
  const errors = h("div");
  const list = h("div");
  const issued = h("div", { "aria-live": "polite" });
  const scopes = ["objects:read", "objects:write", "executions:run", "executions:read", "subscriptions:write"];
  const boxes = scopes.map((scope) => h("input", { type: "checkbox", value: scope, checked: true }));
  const ttl = h("input", { type: "number", min: "60", placeholder: "86400" });
  const form = h(
    "form",
    { class: "inline" },
    h("fieldset", {}, h("legend", {}, "Scopes"), scopes.map((scope, i) => h("label", { class: "check" }, boxes[i], ` ${scope}`))),
    field("Lifetime (seconds)", ttl),
    h("button", { type: "submit" }, "Issue a token"),
  );
  const refresh = async () => {
    const items = await guarded(errors, () => api.all(`/api/v1/workspaces/${ws.id}/tokens`));
    if (!items) return;
    list.replaceChildren(
      table(
        "Tokens",
        ["Id", "Scopes", "Expires", ""],
        items.map((token) => {
          const revoke = h("button", { type: "button", class: "danger", disabled: Boolean(token.revoked_at) }, token.revoked_at ? "Revoked" : "Revoke");
          revoke.addEventListener("click", async () => {
            await guarded(errors, () => api.call("DELETE", `/api/v1/workspaces/${ws.id}/tokens/${token.id}`));
            refresh();
          });
          return [h("code", {}, token.id), token.scopes.join(", "), when(token.expires_at), revoke];
        }),
        "No tokens. Issue one to give a program or a partner access to this workspace alone.",
      ),
    );
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { scopes: boxes.filter((box) => box.checked).map((box) => box.value) };
    if (ttl.value) body.ttl_seconds = Number(ttl.value);
    const token = await guarded(errors, () => api.call("POST", `/api/v1/workspaces/${ws.id}/tokens`, body));
    if (token) {
      issued.replaceChildren(h("p", {}, "The token is shown only now:"), h("code", { class: "secret" }, token.token), " ", copyButton(token.token));
      refresh();
    }
  });
  section.replaceChildren(h("h2", { id: "tokens-heading" }, "Tokens"), errors, list, form, issued);
  refresh();
}

function credentialsSection(ws) {
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "button", class: "secondary" }, "Get temporary S3 credentials");
  button.addEventListener("click", () =>
    guarded(out, async () => {
      const creds = await api.call("POST", `/api/v1/workspaces/${ws.id}/credentials`);
      const text = JSON.stringify(creds, null, 2);
      out.replaceChildren(h("pre", {}, text), copyButton(text));
    }),
  );
  return h("section", {}, h("h2", {}, "Temporary credentials"), h("p", { class: "hint" }, "S3 storage only: credentials that open this workspace and nothing else."), button, out);
}

// --- running and following executions -----------------------------------------------------------

async function runView(query) {
  const errors = h("div");
  const formSlot = h("div");
  page("Run an asset", errors, formSlot);
  const loaded = await guarded(errors, async () => {
    const assets = await api.all("/api/v1/assets");
    const workspaces = me.workspace_id ? [{ id: me.workspace_id, name: "this workspace" }] : await api.all("/api/v1/workspaces");
    return { assets, workspaces };
  });
  if (!loaded) return;
  // The version each asset runs by default: the API's GET of the asset (the highest version).
  const ids = [...new Set(loaded.assets.map((asset) => asset.id))];
  const latest = new Map(
    await Promise.all(ids.map(async (assetId) => [assetId, await api.call("GET", `/api/v1/assets/${encodeURIComponent(assetId)}`)])),
  );
  if (!latest.size) {
    formSlot.replaceChildren(h("p", { class: "empty" }, "The catalog is empty: an operator adds assets."));
    return;
  }
  if (!loaded.workspaces.length) {
    formSlot.replaceChildren(h("p", { class: "empty" }, "Create a workspace first, then upload the data to run on.", " ", h("a", { href: "#/workspaces" }, "Workspaces")));
    return;
  }
  const assetSelect = h("select", { name: "asset" }, [...latest.values()].map((asset) => h("option", { value: asset.id }, `${asset.title} (${asset.id})`)));
  const wsSelect = h("select", { name: "workspace" }, loaded.workspaces.map((ws) => h("option", { value: ws.id, selected: ws.id === query.get("workspace") }, ws.name || ws.id)));
  const specific = h("div");
  const form = h("form", { class: "card" }, field("Asset", assetSelect), field("Workspace", wsSelect), specific, h("button", { type: "submit" }, "Start"));
  formSlot.replaceChildren(form);
  let inputs = [];
  let params = [];
  const describe = async () => {
    const asset = latest.get(assetSelect.value);
    const keys = await guarded(errors, () => api.all(`/api/v1/workspaces/${wsSelect.value}/objects`, {}, 500));
    const list = h("datalist", { id: "workspace-keys" }, (keys || []).map((item) => h("option", { value: item.key })));
    inputs = asset.inputs.map((input) => [input, h("input", { name: `input-${input.name}`, list: "workspace-keys", required: input.required !== false, placeholder: input.kind === "file" ? "data/input.csv" : "data/" })]);
    params = Object.entries(asset.consumer_env || {}).map(([name, rule]) => {
      const control = rule.enum
        ? h("select", { name: `env-${name}` }, rule.enum.map((value) => h("option", { value, selected: value === rule.default }, value)))
        : h("input", { name: `env-${name}`, value: rule.default ?? "", pattern: rule.pattern || undefined });
      return [name, control, rule];
    });
    specific.replaceChildren(
      h(
        "div",
        {},
        h("p", { class: "hint" }, asset.description || ""),
        inputs.length ? h("h2", {}, "Inputs") : null,
        inputs.map(([input, control]) => field(`${input.name} (${input.kind})`, control, input.description || "an object key in the workspace")),
        params.length ? h("h2", {}, "Parameters") : null,
        params.map(([name, control, rule]) => field(name, control, rule.description)),
        list,
      ),
    );
  };
  assetSelect.addEventListener("change", describe);
  wsSelect.addEventListener("change", describe);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      asset_id: assetSelect.value,
      asset_version: latest.get(assetSelect.value).version,
      workspace_id: wsSelect.value,
      inputs: Object.fromEntries(inputs.filter(([, control]) => control.value).map(([input, control]) => [input.name, control.value])),
      env: Object.fromEntries(params.filter(([, control]) => control.value !== "").map(([name, control]) => [name, control.value])),
    };
    const execution = await guarded(errors, () => api.call("POST", "/api/v1/executions", body));
    if (execution) go(`#/executions/${execution.id}`);
  });
  await describe();
}

async function executionsView(query) {
  const errors = h("div");
  const list = h("div");
  page("Executions", h("p", { class: "hint" }, "States change here as they happen."), errors, list);
  const params = query.get("workspace") ? { workspace_id: query.get("workspace") } : {};
  const items = await guarded(errors, () => api.all("/api/v1/executions", params, 200));
  if (!items) return;
  const rows = new Map();
  const render = () =>
    list.replaceChildren(
      table(
        "Executions",
        ["Execution", "State", "Asset", "Workspace", "Created"],
        [...rows.values()].map((e) => [
          h("a", { href: `#/executions/${e.id}` }, h("code", {}, e.id)),
          stateBadge(e.state),
          `${e.asset.id}@${e.asset.version}`,
          h("a", { href: `#/workspaces/${e.workspace_id}` }, h("code", {}, e.workspace_id)),
          when(e.created_at),
        ]),
        "No executions yet. Start one from the Run page.",
      ),
    );
  for (const item of items) rows.set(item.id, item);
  render();
  const register = onLeave();
  const stop = api.events({ types: "execution.state_changed", ...params }, (event) => {
    const execution = event.data;
    const known = rows.get(execution.id);
    if (known && known.version >= execution.version) return;
    if (!known) {
      const fresh = new Map([[execution.id, execution], ...rows]);
      rows.clear();
      for (const [id, value] of fresh) rows.set(id, value);
    } else {
      rows.set(execution.id, execution);
    }
    render();
  });
  register(stop);
}

async function executionView(id) {
  const errors = h("div");
  const view = page("Execution", errors);
  const register = onLeave();
  let execution = await guarded(errors, () => api.call("GET", `/api/v1/executions/${id}`));
  if (!execution) return;
  const header = h("p", { class: "meta" });
  const timeline = h("ol", { class: "timeline" });
  const outputs = h("div");
  const log = h("pre", { class: "log", tabindex: "0", "aria-label": "Worker log" });
  const cancel = h("button", { type: "button", class: "danger" }, "Cancel");
  const status = h("p", { class: "status", "aria-live": "polite" });
  view.append(header, status, cancel, h("h2", {}, "Timeline"), timeline, h("h2", {}, "Log"), log, h("h2", {}, "Outputs"), outputs);
  cancel.addEventListener("click", async () => {
    const answer = await guarded(errors, () => api.call("POST", `/api/v1/executions/${id}/cancel`));
    if (answer) show(answer);
  });
  const controller = new AbortController();
  let following = false;
  const loadLog = async () => {
    try {
      const response = await fetch(`/api/v1/executions/${id}/logs`, { headers: { Authorization: `Bearer ${api.credential()}` } });
      if (response.ok) log.textContent = (await response.text()) || "(the worker printed nothing)";
    } catch {
      /* the timeline still tells the story */
    }
  };
  const followLog = () => {
    if (following) return;
    following = true;
    log.textContent = "";
    api
      .streamText(`/api/v1/executions/${id}/logs?follow=true`, (text) => {
        log.textContent += text;
        log.scrollTop = log.scrollHeight;
      }, controller.signal)
      .catch(() => {})
      .finally(() => {
        following = false; // a stream that ended early is opened again at the next state
      });
  };
  const showOutputs = async () => {
    const answer = await guarded(errors, () => api.call("GET", `/api/v1/executions/${id}/outputs`));
    if (!answer) return;
    outputs.replaceChildren(
      table(
        "Outputs",
        ["Output", "Key", "Size", "SHA-256", ""],
        answer.outputs.map((output) => {
          const get = h("button", { type: "button", class: "secondary" }, "Download");
          get.setAttribute("aria-label", `Download ${output.key}`);
          get.addEventListener("click", () => guarded(errors, () => api.download(execution.workspace_id, output.key)));
          return [output.name, h("code", {}, output.key), bytes(output.size), h("code", { class: "digest" }, output.sha256), get];
        }),
        answer.state === "COMPLETE" ? "This execution declared no outputs." : "Outputs appear here once the execution is COMPLETE.",
      ),
    );
  };
  const show = (current) => {
    execution = current;
    header.replaceChildren(
      stateBadge(current.state),
      ` ${current.asset.id}@${current.asset.version} · attempt ${current.attempt} · workspace `,
      h("a", { href: `#/workspaces/${current.workspace_id}` }, h("code", {}, current.workspace_id)),
      current.reason ? ` · ${current.reason}` : "",
      current.message ? ` · ${current.message}` : "",
    );
    status.textContent = `State: ${current.state}`;
    timeline.replaceChildren(...current.history.map((step) => h("li", {}, stateBadge(step.state), " ", when(step.at), step.reason ? ` (${step.reason})` : "")));
    cancel.hidden = FINAL.has(current.state) || current.state === "CANCELING";
    if (FINAL.has(current.state)) {
      controller.abort();
      loadLog();
      showOutputs();
    } else if (current.state === "RUNNING" || current.state === "INITIALIZING") {
      followLog();
    }
  };
  show(execution);
  if (!FINAL.has(execution.state)) {
    outputs.replaceChildren(h("p", { class: "empty" }, "Outputs appear here once the execution is COMPLETE."));
  }
  const stop = api.events(
    { types: "execution.state_changed", execution_id: id },
    (event) => {
      if (event.data.version > execution.version) show(event.data);
    },
    async () => {
      // Reconnected: what changed while nobody listened is read, not waited for.
      try {
        const latest = await api.call("GET", `/api/v1/executions/${id}`);
        if (latest.version > execution.version) show(latest);
      } catch {
        /* the next reconnect tries again */
      }
    },
  );
  register(() => {
    stop();
    controller.abort();
  });
}

// --- subscriptions ------------------------------------------------------------------------------

async function subscriptionsView() {
  const errors = h("div");
  const list = h("div");
  const url = h("input", { type: "url", required: true, placeholder: "https://hooks.example.org/provider" });
  const events = h("input", { value: "execution.*", required: true });
  const issued = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card" }, h("h2", {}, "New subscription"), field("Receiver URL", url), field("Events", events, "Patterns separated by commas, e.g. execution.completed, execution.failed"), h("button", { type: "submit" }, "Subscribe"), issued);
  page("Subscriptions", errors, list, form);
  const refresh = async () => {
    const items = await guarded(errors, () => api.all("/api/v1/subscriptions"));
    if (!items) return;
    list.replaceChildren(
      table(
        "Subscriptions",
        ["Receiver", "Events", "State", ""],
        items.map((sub) => {
          const remove = h("button", { type: "button", class: "danger" }, "Delete");
          remove.addEventListener("click", async () => {
            if (!confirm(`Delete the subscription for ${sub.url}?`)) return;
            await guarded(errors, () => api.call("DELETE", `/api/v1/subscriptions/${sub.id}`));
            refresh();
          });
          return [h("a", { href: `#/subscriptions/${sub.id}` }, sub.url), sub.events.join(", "), sub.state, remove];
        }),
        "No subscriptions. Subscribe a URL to receive signed webhooks when executions change.",
      ),
    );
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { url: url.value, events: events.value.split(",").map((item) => item.trim()).filter(Boolean) };
    const made = await guarded(errors, () => api.call("POST", "/api/v1/subscriptions", body));
    if (made) {
      issued.replaceChildren(h("p", {}, "Its secret, shown only now (receivers verify signatures with it):"), h("code", { class: "secret" }, made.secret), " ", copyButton(made.secret));
      refresh();
    }
  });
  refresh();
}

async function subscriptionView(id) {
  const errors = h("div");
  const list = h("div");
  page("Deliveries", errors, list);
  const refresh = async () => {
    const items = await guarded(errors, () => api.all(`/api/v1/subscriptions/${id}/deliveries`, {}, 500));
    if (!items) return;
    list.replaceChildren(
      table(
        "Deliveries",
        ["Event", "State", "Attempts", "Last error", ""],
        items.map((delivery) => {
          let retry = "";
          if (delivery.state === "dead") {
            retry = h("button", { type: "button" }, "Retry");
            retry.addEventListener("click", async () => {
              await guarded(errors, () => api.call("POST", `/api/v1/subscriptions/${id}/deliveries/${delivery.id}/retry`));
              announce("Delivery queued again");
              refresh();
            });
          }
          return [delivery.event_type, delivery.state, String(delivery.attempt_count), delivery.last_error || "", retry];
        }),
        "No deliveries yet: they appear when a matching event happens.",
      ),
    );
  };
  refresh();
}

// --- operators ----------------------------------------------------------------------------------

async function tenantsView() {
  const errors = h("div");
  const list = h("div");
  const participant = h("input", { required: true, placeholder: "did:web:partner.example" });
  const name = h("input", {});
  const form = h("form", { class: "card" }, h("h2", {}, "New tenant"), field("Participant id", participant), field("Display name", name, "Optional; defaults to the participant id."), h("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { participant_id: participant.value };
    if (name.value) body.display_name = name.value;
    const made = await guarded(errors, () => api.call("POST", "/api/v1/tenants", body));
    if (made) go(`#/tenants/${made.id}`);
  });
  page("Tenants", errors, list, form);
  const items = await guarded(errors, () => api.all("/api/v1/tenants"));
  if (items) {
    list.replaceChildren(
      table(
        "Tenants",
        ["Display name", "Participant", "Assets", "Id"],
        items.map((tenant) => [
          h("a", { href: `#/tenants/${tenant.id}` }, tenant.display_name),
          tenant.participant_id,
          tenant.allowed_assets ? tenant.allowed_assets.join(", ") || "none" : "all",
          h("code", {}, tenant.id),
        ]),
        "No tenants.",
      ),
    );
  }
}

async function tenantView(id) {
  const errors = h("div");
  const list = h("div");
  const issued = h("div", { "aria-live": "polite" });
  const keyName = h("input", { placeholder: "laptop" });
  const role = h("select", {}, h("option", { value: "consumer" }, "consumer"), h("option", { value: "admin" }, "admin"));
  const form = h("form", { class: "card" }, h("h2", {}, "New API key"), field("Name", keyName), field("Role", role), h("button", { type: "submit" }, "Issue a key"), issued);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const made = await guarded(errors, () => api.call("POST", `/api/v1/tenants/${id}/api-keys`, { name: keyName.value, role: role.value }));
    if (made) {
      issued.replaceChildren(h("p", {}, "The key is shown only now:"), h("code", { class: "secret" }, made.key), " ", copyButton(made.key));
      refresh();
    }
  });
  const view = page("Tenant", errors, list, form);
  const tenant = await guarded(errors, () => api.call("GET", `/api/v1/tenants/${id}`));
  if (tenant) view.querySelector("h1").textContent = `Tenant ${tenant.display_name}`;
  async function refresh() {
    const keys = await guarded(errors, () => api.all(`/api/v1/tenants/${id}/api-keys`));
    if (!keys) return;
    list.replaceChildren(
      h("h2", {}, "API keys"),
      table(
        "API keys",
        ["Name", "Role", "Starts with", "Created", ""],
        keys.map((key) => {
          const revoke = h("button", { type: "button", class: "danger", disabled: Boolean(key.revoked_at) }, key.revoked_at ? "Revoked" : "Revoke");
          revoke.addEventListener("click", async () => {
            await guarded(errors, () => api.call("DELETE", `/api/v1/tenants/${id}/api-keys/${key.id}`));
            refresh();
          });
          return [key.name || "–", key.role, h("code", {}, key.prefix), when(key.created_at), revoke];
        }),
        "No API keys. Issue one for each person or program of this tenant.",
      ),
    );
  }
  refresh();
}

async function assetsView() {
  const errors = h("div");
  const list = h("div");
  page(
    "Assets",
    h("p", { class: "hint" }, "Assets come from the asset files in assets.directory at start, and from here. Check a file offline with provider assets validate FILE."),
    errors,
    list,
    assetForm(() => assetsView()),
  );
  const items = await guarded(errors, () => api.all("/api/v1/assets"));
  if (!items) return;
  list.replaceChildren(
    table(
      "Assets",
      ["Asset", "Version", "Image", "Inputs", "Outputs", "Resources"],
      items.map((asset) => [
        h("span", {}, h("strong", {}, asset.title), h("br"), h("code", {}, asset.id)),
        asset.version,
        h("code", {}, asset.image),
        asset.inputs.map((input) => `${input.name} (${input.kind})`).join(", ") || "–",
        asset.outputs.map((output) => output.name).join(", ") || "–",
        Object.entries(asset.resources || {}).filter(([, value]) => value).map(([name, value]) => `${name} ${value}`).join(", "),
      ]),
      "The catalog is empty: add an asset below, or put asset files in the assets directory.",
    ),
  );
}

const ASSET_TEMPLATE = {
  title: "My analysis",
  description: "What it computes, from what",
  image: "registry.example/analysis:1.0.0",
  inputs: [{ name: "data", kind: "file", mount_path: "/data/input" }],
  outputs: [{ name: "result", path: "result.csv", kind: "file" }],
  result_dir: "/results",
  resources: { cpu: "1", memory: "1Gi" },
  max_run_seconds: 3600,
};

function assetForm(done) {
  const id = h("input", { required: true, placeholder: "my-analysis", pattern: "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" });
  const version = h("input", { required: true, value: "1.0.0" });
  const spec = h("textarea", { rows: "16", spellcheck: "false", class: "code" });
  spec.value = JSON.stringify(ASSET_TEMPLATE, null, 2);
  const outcome = h("div", { "aria-live": "polite" });
  const send = async (dryRun) => {
    outcome.replaceChildren();
    let body;
    try {
      body = JSON.parse(spec.value);
    } catch (error) {
      outcome.replaceChildren(problemBox({ title: "The definition is not JSON", detail: String(error.message || error) }));
      return;
    }
    const path = `/api/v1/assets/${encodeURIComponent(id.value)}/versions/${encodeURIComponent(version.value)}${dryRun ? "?dry_run=true" : ""}`;
    const asset = await guarded(outcome, () => api.call("PUT", path, body));
    if (!asset) return;
    if (dryRun) outcome.replaceChildren(h("p", { class: "ok" }, `Valid: ${asset.id} ${asset.version} can be added.`));
    else done();
  };
  const validate = h("button", { type: "button", class: "secondary" }, "Validate");
  validate.addEventListener("click", () => send(true));
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Add an asset"),
    field("Asset id", id),
    field("Version", version, "A PEP 440 version, e.g. 1.0.0; an existing version is replaced."),
    field("Definition (JSON)", spec, "As in an asset file (docs/assets.md), without id and version."),
    outcome,
    h("div", { class: "buttons" }, validate, " ", h("button", { type: "submit" }, "Add")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(false);
  });
  return form;
}

async function transfersView() {
  const errors = h("div");
  const provisionings = h("div");
  const flows = h("div");
  page(
    "Transfers",
    errors,
    h("h2", {}, "EDC provisionings"),
    h("p", { class: "hint" }, "One per provisioned transfer: its workspace, and whether the connector took the callback."),
    provisionings,
    h("h2", {}, "Data Plane Signaling flows"),
    flows,
  );
  await guarded(errors, async () => {
    const [records, dataflows] = await Promise.all([api.all("/api/v1/provisionings", {}, 200), api.all("/api/v1/dataflows", {}, 200)]);
    provisionings.replaceChildren(
      table(
        "EDC provisionings",
        ["Transfer", "Offering", "Participant", "Workspace", "State", "Callback", "Updated"],
        records.map((item) => [
          h("code", {}, item.transfer_process_id),
          item.asset_id,
          item.participant_id,
          h("a", { href: `#/workspaces/${item.workspace_id}` }, h("code", {}, item.workspace_id)),
          item.state,
          [item.pending_callback ? `${item.pending_callback} pending` : "taken", ` · ${item.attempts} attempts`, item.last_status ? ` · last HTTP ${item.last_status}` : "", item.error ? ` · ${item.error}` : ""].join(""),
          when(item.updated_at),
        ]),
        "No EDC provisionings: they appear when a connector calls the provisioner webhook.",
      ),
    );
    flows.replaceChildren(
      table(
        "Data flows",
        ["Flow", "Control plane", "Role", "State", "Workspace", "Notice", "Updated"],
        dataflows.map((flow) => [
          h("code", {}, flow.id),
          flow.control_plane,
          flow.role,
          flow.state,
          h("a", { href: `#/workspaces/${flow.workspace_id}` }, h("code", {}, flow.workspace_id)),
          flow.notice ? `${flow.notice} owed (${flow.notice_attempts} attempts${flow.notice_error ? `: ${flow.notice_error}` : ""})` : "none owed",
          when(flow.updated_at),
        ]),
        "No data flows: they appear when a control plane signals a start or a prepare.",
      ),
    );
  });
}

async function statusView() {
  const errors = h("div");
  const checks = h("div");
  const counts = h("div");
  page("Status", errors, h("h2", {}, "Components"), checks, h("h2", {}, "Executions"), counts);
  const response = await fetch("/readyz");
  const body = await response.json().catch(() => ({}));
  const rows = Object.entries(body.checks || {}).map(([name, check]) => [name, check.ready ? "ready" : "not ready", check.error || ""]);
  const metrics = await fetch("/metrics").then((answer) => answer.text()).catch(() => "");
  const outbox = /^provider_webhook_outbox_depth\s+([0-9.e+]+)/m.exec(metrics);
  rows.push(["webhook outbox", outbox ? `${Number(outbox[1])} deliveries waiting` : "unknown", ""]);
  checks.replaceChildren(table("Components", ["Component", "State", "Error"], rows, "No checks reported."));
  await guarded(errors, async () => {
    const states = ["QUEUED", "INITIALIZING", "RUNNING", "CANCELING"];
    const found = await Promise.all(states.map((state) => api.all("/api/v1/executions", { state }, 1000)));
    const failed = await api.all("/api/v1/executions", { state: "SYSTEM_ERROR" }, 20);
    counts.replaceChildren(
      table("Active executions", ["State", "Executions"], states.map((state, i) => [state, String(found[i].length)]), ""),
      h("h2", {}, "Recent system errors"),
      table(
        "Recent system errors",
        ["Execution", "Reason", "Message", "When"],
        failed.map((e) => [h("a", { href: `#/executions/${e.id}` }, h("code", {}, e.id)), e.reason || "", e.message || "", when(e.updated_at)]),
        "No system errors.",
      ),
    );
  });
}

// --- routing ------------------------------------------------------------------------------------

async function route() {
  for (const stop of cleanups) stop();
  cleanups = [];
  generation += 1;
  const [path, search = ""] = location.hash.slice(1).split("?");
  const query = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean);
  if (!me && api.credential()) {
    try {
      me = await api.call("GET", "/api/v1/me");
    } catch {
      api.forget();
    }
    renderNav();
  }
  if (!me && parts[0] !== "signin") return go("#/signin");
  const views = {
    signin: () => signInView(),
    workspaces: () => (parts[1] ? workspaceView(parts[1], query) : workspacesView()),
    run: () => runView(query),
    executions: () => (parts[1] ? executionView(parts[1]) : executionsView(query)),
    subscriptions: () => (parts[1] ? subscriptionView(parts[1]) : subscriptionsView()),
    tenants: () => (parts[1] ? tenantView(parts[1]) : tenantsView()),
    assets: () => assetsView(),
    edc: () => transfersView(),
    status: () => statusView(),
  };
  const view = views[parts[0]];
  if (!view || (parts[1] !== undefined && !ID.test(parts[1]))) return go(home());
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === `#/${parts[0]}` || link.getAttribute("href") === `#/${parts.slice(0, 2).join("/")}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    await view();
  } catch (error) {
    main.append(problemBox(error));
  }
}

// Forms are sent by their handlers; one submitted before its handler was attached must not
// reload the page with its fields in the URL.
document.addEventListener("submit", (event) => event.preventDefault(), true);
window.addEventListener("hashchange", route);
renderNav();
route();
