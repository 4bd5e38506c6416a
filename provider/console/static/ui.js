// Small DOM helpers: elements are built with text nodes, never from HTML strings, so that no
// name, key or message from the API can become markup.

/** h("button", {type: "submit", onclick}, "Save") */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function bytes(value) {
  if (value === null || value === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export function when(timestamp) {
  if (!timestamp) return "–";
  const date = new Date(timestamp);
  return h("time", { datetime: timestamp, title: timestamp }, date.toLocaleString());
}

/** A problem (or any error) as people read it: title and detail, announced to screen readers. */
export function problemBox(error) {
  const box = h("div", { class: "problem", role: "alert" });
  const title = error.title || "Something went wrong";
  box.append(h("strong", {}, title));
  if (error.detail) box.append(h("p", {}, error.detail));
  else if (!error.title && error.message) box.append(h("p", {}, error.message));
  for (const problem of error.problems || []) {
    box.append(h("p", { class: "field-problem" }, `${problem.field}: ${problem.message}`));
  }
  return box;
}

/** Run `work`; show its error in `slot` (replacing what was there) instead of throwing. */
export async function guarded(slot, work) {
  slot.replaceChildren();
  try {
    return await work();
  } catch (error) {
    slot.replaceChildren(problemBox(error));
    return undefined;
  }
}

export function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col" }, column)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

export function stateBadge(state) {
  return h("span", { class: `state state-${String(state).toLowerCase()}` }, state);
}

/** A button that copies `text` and says so. */
export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button", class: "secondary" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy it by hand";
    }
  });
  return button;
}

/** "k=v, k2=v2" -> {k: "v", k2: "v2"}; throws a readable error for a malformed pair. */
export function parseLabels(text) {
  const labels = {};
  for (const part of text.split(",").map((item) => item.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at <= 0) throw Object.assign(new Error(), { title: "Labels", detail: `"${part}" is not KEY=VALUE` });
    labels[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return labels;
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
  );
}
