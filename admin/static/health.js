// Health of one provider: the sync-run chart (inline SVG), alerts, invoices and the write-back log.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const METRICS = [
  ["rowsWritten", "rows written"], ["calls", "calls"], ["throttled429", "429s"],
  ["failures", "failed runs"], ["degraded", "degraded runs"], ["durationS", "run seconds"],
];
const CSV_KINDS = ["mismatches", "errors", "warnings"];

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

const Health = {
  provider: null,
  writebackToken: null,
  // state -> the operator actions it allows ("retry", "dismiss"), as the list route sends it: the
  // write-back service's own rules, so the buttons and the state filter follow them
  writebackStates: {},

  async show(providerId) {
    this.provider = providerId;
    show(byId("health-section"), true);
    byId("health-provider").textContent = providerId;
    await Promise.all([this.chart(), this.alerts(), this.invoices(), this.writebacks(false)]);
  },

  async chart() {
    const box = byId("health-chart");
    const asked = this.provider;
    const result = await Api.call("GET", `providers/${encodeURIComponent(this.provider)}/health?days=30`);
    if (asked !== this.provider) return; // another provider was opened meanwhile
    if (!result.ok) { box.replaceChildren(el("p", { className: "problem", text: errorText(result) })); return; }
    const days = result.body.days || [];
    box.replaceChildren(drawChart(days));
    const total = days.reduce((sum, d) => sum + d.runs, 0);
    byId("health-note").textContent = `${total} run(s) in the last ${days.length} days` +
      (result.body.truncated ? ` (complete since ${shortDate(result.body.completeSince)})` : "");
  },

  async alerts() {
    const asked = this.provider;
    const result = await Api.call("GET", `alerts?provider=${encodeURIComponent(this.provider)}`);
    if (asked !== this.provider) return; // another provider was opened meanwhile
    const items = result.ok ? result.body.items || [] : [];
    fill(byId("alerts").tBodies[0], items.map((a) => el("tr", { className: "alert " + a.severity, "data-kind": a.kind },
      el("td", { className: "severity", text: a.severity }), el("td", { className: "kind", text: a.kind }),
      el("td", { className: "mono", text: a.customer || "" }), el("td", { className: "mono", text: a.subscription || "" }),
      el("td", { className: "message", text: a.message }), el("td", { text: shortDate(a.since) }),
      el("td", { className: "muted", text: a.fix || "" }))));
    show(byId("alerts"), items.length > 0);
    show(byId("alerts-empty"), items.length === 0);
    if (!result.ok) byId("alerts-empty").textContent = errorText(result);
  },

  async invoices() {
    const asked = this.provider;
    const result = await Api.call("GET", `invoices?provider=${encodeURIComponent(this.provider)}`);
    if (asked !== this.provider) return; // another provider was opened meanwhile
    const items = result.ok ? result.body.items || [] : [];
    fill(byId("invoices").tBodies[0], items.map((invoice) => this.invoiceRow(invoice)));
    show(byId("invoices-empty"), items.length === 0);
    if (!result.ok) byId("invoices-empty").textContent = errorText(result);
  },

  invoiceRow(invoice) {
    const imported = Boolean(invoice.reconStatus);
    const links = imported ? CSV_KINDS.map((kind) => el("button", {
      type: "button", className: "link", text: kind + ".csv",
      onclick: async (event) => {
        const path = `invoices/${encodeURIComponent(this.provider)}/${encodeURIComponent(invoice.id)}/${kind}.csv`;
        const status = await Api.download(path, `${invoice.id}-${kind}.csv`);
        if (status !== 200) event.target.textContent = `${kind}.csv: ${status === 404 ? "none" : "HTTP " + status}`;
      },
    })) : [el("span", { className: "muted", text: "—" })];
    const importState = invoice.importState || (imported ? `imported (${invoice.reconSource || "?"})` : "not imported");
    const check = invoice.checksum || invoice.reconStatus || "";
    return el("tr", { "data-invoice": invoice.id },
      el("td", { text: invoice.id }), el("td", { text: shortDate(invoice.invoiceDate) }), el("td", { text: invoice.kind }),
      el("td", { text: `${invoice.totalCharges ?? ""} ${invoice.currencyCode || ""}` }),
      el("td", { text: importState }), el("td", { className: "state-" + check, text: check }), el("td", {}, ...links));
  },

  filters() {
    const form = byId("writeback-filters");
    const query = new URLSearchParams({ provider: this.provider });
    for (const name of ["customer", "subscription", "state"]) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    if (this.writebackToken) query.set("next", this.writebackToken);
    return query;
  },

  async writebacks(more) {
    if (!more) this.writebackToken = null;
    const asked = this.provider;
    const result = await Api.call("GET", `writebacks?${this.filters()}`);
    if (asked !== this.provider) return; // another provider was opened meanwhile
    const tbody = byId("writebacks").tBodies[0];
    const status = byId("writebacks-status");
    if (!result.ok) { status.textContent = errorText(result); return; }
    this.stateFilter(result.body.states || {});
    const rows = (result.body.items || []).map((item) => this.writebackRow(item));
    if (more) tbody.append(...rows); else fill(tbody, rows);
    status.textContent = tbody.rows.length ? "" : "No write-backs match.";
    this.writebackToken = result.body.next || null;
    show(byId("writebacks-more"), Boolean(this.writebackToken));
  },

  // The state filter's choices: every state the server named (the chosen one kept).
  stateFilter(states) {
    this.writebackStates = states;
    const select = byId("writeback-state");
    const chosen = select.value;
    const names = Object.keys(states);
    if (names.join() === [...select.options].slice(1).map((o) => o.value).join()) return;
    select.replaceChildren(el("option", { value: "", text: "any" }),
      ...names.map((name) => el("option", { value: name, text: name, selected: name === chosen })));
  },

  writebackRow(item) {
    const allowed = this.writebackStates[item.state] || [];
    const actions = ["retry", "dismiss"].filter((action) => allowed.includes(action)).map((action) => el("button", {
      type: "button", className: action, text: action === "retry" ? "Retry" : "Dismiss",
      onclick: () => this.writebackAction(item, action),
    }));
    return el("tr", { "data-key": item.key, className: "state-" + item.state },
      el("td", { className: "mono", text: item.key }), el("td", { text: item.customer }), el("td", { text: item.subscription }),
      el("td", { text: item.operation }), el("td", { className: "state", text: item.state }),
      el("td", { className: "why" }, item.blockedBy ? el("span", { className: "blocked-by mono", text: item.blockedBy }) : null,
        item.blockedBy && item.error ? " — " : "", item.error || ""),
      el("td", { text: shortDate(item.updatedAt || item.submittedAt) }), el("td", {}, ...actions));
  },

  async writebackAction(item, action) {
    const result = await Api.call("POST", `writebacks/${encodeURIComponent(item.key)}/${action}`);
    if (result.ok) await this.writebacks(false); // then the outcome, which the refresh would clear
    byId("writebacks-status").textContent = result.ok ? `${action}: ${item.key} done.` : `${action}: ${errorText(result)}`;
  },
};

// One small bar chart per metric, one bar per day, in one SVG (no chart library).
function drawChart(days) {
  const width = 760, panel = 64, left = 110, gap = 10;
  const barWidth = Math.max(2, Math.floor((width - left) / Math.max(days.length, 1)) - 2);
  const root = svg("svg", { id: "health-svg", viewBox: `0 0 ${width} ${METRICS.length * (panel + gap)}`,
    role: "img", "aria-label": "sync runs per day" });
  METRICS.forEach(([key, label], index) => {
    const top = index * (panel + gap);
    const max = Math.max(...days.map((d) => Number(d[key]) || 0), 0);
    const group = svg("g", { class: "metric", "data-metric": key, transform: `translate(0 ${top})` },
      svg("text", { x: 0, y: 16, class: "label", text: label }),
      svg("text", { x: 0, y: 34, class: "max", text: `max ${formatNumber(max)}` }),
      svg("line", { x1: left, x2: width, y1: panel, y2: panel, class: "axis" }));
    days.forEach((day, i) => {
      const value = Number(day[key]) || 0;
      const height = max ? Math.max(1, Math.round((value / max) * (panel - 6))) : 0;
      const bar = svg("rect", { x: left + i * (barWidth + 2), y: panel - height, width: barWidth, height,
        class: ["failures", "degraded", "throttled429"].includes(key) ? "bar bad" : "bar", "data-date": day.date, "data-value": value },
        svg("title", { text: `${day.date}: ${formatNumber(value)} ${label} (${day.runs} runs)` }));
      group.append(bar);
    });
    root.append(group);
  });
  return root;
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
