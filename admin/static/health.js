// Health of one provider: the sync-run chart (inline SVG), alerts, invoices and the write-back log.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const METRICS = [
  ["rowsWritten", "rows written"], ["calls", "calls"], ["throttled429", "429s"],
  ["failures", "failed runs"], ["durationS", "run seconds"],
];
const CSV_KINDS = ["mismatches", "errors", "warnings"];
const RETRYABLE = new Set(["failed", "rejected", "conflict", "unconfirmed", "blocked"]);

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

  async show(providerId) {
    this.provider = providerId;
    show(byId("health-section"), true);
    byId("health-provider").textContent = providerId;
    await Promise.all([this.chart(), this.alerts(), this.invoices(), this.writebacks(false)]);
  },

  async chart() {
    const box = byId("health-chart");
    const result = await Api.call("GET", `providers/${encodeURIComponent(this.provider)}/health?days=30`);
    if (!result.ok) { box.replaceChildren(el("p", { className: "problem", text: errorText(result) })); return; }
    const days = result.body.days || [];
    box.replaceChildren(drawChart(days));
    const total = days.reduce((sum, d) => sum + d.runs, 0);
    byId("health-note").textContent = `${total} run(s) in the last ${days.length} days` +
      (result.body.truncated ? ` (complete since ${shortDate(result.body.completeSince)})` : "");
  },

  async alerts() {
    const result = await Api.call("GET", `alerts?provider=${encodeURIComponent(this.provider)}`);
    const items = result.ok ? result.body.items || [] : [];
    fill(byId("alerts"), items.map((a) => el("li", { className: "alert " + a.severity, "data-kind": a.kind },
      el("strong", { text: a.severity }), ` ${a.kind}: ${a.message}`, a.subject ? ` (${a.subject})` : "",
      a.fix ? el("div", { className: "muted", text: a.fix }) : null)));
    show(byId("alerts-empty"), items.length === 0);
    if (!result.ok) byId("alerts-empty").textContent = errorText(result);
  },

  async invoices() {
    const result = await Api.call("GET", `invoices?provider=${encodeURIComponent(this.provider)}`);
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
    if (this.writebackToken) query.set("pageToken", this.writebackToken);
    return query;
  },

  async writebacks(more) {
    if (!more) this.writebackToken = null;
    const result = await Api.call("GET", `writebacks?${this.filters()}`);
    const tbody = byId("writebacks").tBodies[0];
    const status = byId("writebacks-status");
    if (result.status === 404 || result.status === 405) {
      fill(tbody, []);
      status.textContent = "The write-back log is not available from this app yet.";
      show(byId("writebacks-more"), false);
      return;
    }
    if (!result.ok) { status.textContent = errorText(result); return; }
    const rows = (result.body.items || []).map((item) => this.writebackRow(item));
    if (more) tbody.append(...rows); else fill(tbody, rows);
    status.textContent = tbody.rows.length ? "" : "No write-backs match.";
    this.writebackToken = result.body.next || null;
    show(byId("writebacks-more"), Boolean(this.writebackToken));
  },

  writebackRow(item) {
    const actions = RETRYABLE.has(item.state) ? [
      el("button", { type: "button", className: "retry", text: "Retry", onclick: () => this.writebackAction(item, "retry") }),
      el("button", { type: "button", className: "dismiss", text: "Dismiss", onclick: () => this.writebackAction(item, "dismiss") }),
    ] : [];
    return el("tr", { "data-key": item.key, className: "state-" + item.state },
      el("td", { className: "mono", text: item.key }), el("td", { text: item.customer }), el("td", { text: item.subscription }),
      el("td", { text: item.operation }), el("td", { className: "state", text: item.state }),
      el("td", { text: [item.blockedBy, item.error].filter(Boolean).join(" — ") }),
      el("td", { text: shortDate(item.updatedAt || item.submittedAt) }), el("td", {}, ...actions));
  },

  async writebackAction(item, action) {
    const result = await Api.call("POST", `writebacks/${encodeURIComponent(item.key)}/${action}`);
    byId("writebacks-status").textContent = result.ok ? `${action}: ${item.key} done.` : `${action}: ${errorText(result)}`;
    if (result.ok) this.writebacks(false);
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
        class: key === "failures" || key === "throttled429" ? "bar bad" : "bar", "data-date": day.date, "data-value": value },
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
