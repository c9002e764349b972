// pcsync admin page: the one way to the JSON API, and small DOM helpers.
// function_key mode: the key lives in this tab's sessionStorage and goes out as the
// x-functions-key header, never in an address. app_service mode: the page calls the gateway
// (/api/admin/api/...), App Service Authentication's session cookie identifies the admin.
"use strict";

const KEY_STORAGE = "pcsync.functionKey";

const Api = {
  mode: document.body.dataset.auth,
  base: document.body.dataset.api,

  key() { return sessionStorage.getItem(KEY_STORAGE); },
  setKey(value) { sessionStorage.setItem(KEY_STORAGE, value); },
  forgetKey() { sessionStorage.removeItem(KEY_STORAGE); },
  needsKey() { return this.mode === "function_key" && !this.key(); },

  // One request; resolves to {status, ok, body} (body: parsed JSON, or text, or null).
  async call(method, path, body) {
    const headers = { "Accept": "application/json", "X-PCSYNC-Admin": "1" };
    if (this.mode === "function_key" && this.key()) headers["x-functions-key"] = this.key();
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.base + path, init);
    } catch (error) {
      return { status: 0, ok: false, body: { error: "the app could not be reached: " + error.message } };
    }
    const text = await response.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
    if (response.status === 401 && this.mode === "function_key") Api.onUnauthorized();
    return { status: response.status, ok: response.ok, body: parsed, response };
  },

  // A file from the API (CSV exports) saved through a blob: the key stays in the header.
  async download(path, filename) {
    const headers = { "X-PCSYNC-Admin": "1" };
    if (this.mode === "function_key" && this.key()) headers["x-functions-key"] = this.key();
    const response = await fetch(this.base + path, { headers, credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return response.status;
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    return response.status;
  },

  onUnauthorized() {},
};

function errorText(result) {
  const body = result.body;
  if (body && typeof body === "object" && body.error) return body.error;
  if (result.status === 401) return "not signed in (wrong or missing function key)";
  return "request failed (HTTP " + result.status + ")";
}

// Build an element; text only ever goes in through textContent (no HTML from data).
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function byId(id) { return document.getElementById(id); }

function show(node, visible) { node.hidden = !visible; }

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function shortDate(iso) {
  if (!iso) return "";
  return String(iso).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
}
