// Providers list, the provider form (server messages per field), consent link and Verify.
"use strict";

const SETUP = JSON.parse(byId("setup-steps").textContent);
const POLL_MS = 2000;
const POLL_LIMIT_MS = 16 * 60 * 1000; // a consent link lives 15 minutes

const Providers = {
  current: null, // the provider shown in the form (as the API returned it), or null for a new one
  poll: null,
  opening: 0, // only the newest Open shows its provider (an older answer may arrive later)

  async load() {
    const result = await Api.call("GET", "providers");
    if (!result.ok) { Page.banner(errorText(result)); return []; }
    const providers = result.body.providers || [];
    const rows = [];
    for (const provider of providers) rows.push(this.row(provider));
    fill(byId("providers").tBodies[0], rows);
    show(byId("providers-empty"), providers.length === 0);
    for (const provider of providers) this.loadHealthCells(provider.id);
    return providers;
  },

  row(provider) {
    const consent = provider.consent || {};
    const verify = provider.verify;
    const verifyText = !verify ? "never run" : (verify.passed ? "passed" : "failed") + " " + shortDate(verify.checkedAt);
    return el("tr", { "data-provider": provider.id },
      el("td", {}, el("strong", { text: provider.id }), el("br"), el("span", { className: "muted", text: provider.name })),
      el("td", { className: "consent-status state-" + consent.status, text: consent.status }),
      el("td", { className: "days-left", text: daysLeft(consent.refreshTokenExpiresAt) }),
      el("td", { className: verify ? (verify.passed ? "pass" : "fail") : "muted", text: verifyText }),
      el("td", { className: "last-runs muted", text: "…" }),
      el("td", {}, el("button", { type: "button", text: "Open", onclick: () => this.open(provider.id) })));
  },

  async loadHealthCells(providerId) {
    const result = await Api.call("GET", `providers/${encodeURIComponent(providerId)}/health?days=30`);
    const cell = document.querySelector(`tr[data-provider="${CSS.escape(providerId)}"] .last-runs`);
    if (!cell) return;
    if (!result.ok) { cell.textContent = errorText(result); return; }
    const runs = Object.entries(result.body.lastRuns || {});
    cell.className = "last-runs";
    cell.replaceChildren(...(runs.length ? runs.map(([stream, run]) => el("div", { className: "state-" + run.outcome },
      `${stream}: ${run.outcome} ${shortDate(run.startedAt)}`)) : [el("span", { className: "muted", text: "no runs yet" })]));
  },

  async open(providerId) {
    const ticket = ++this.opening;
    const result = await Api.call("GET", `providers/${encodeURIComponent(providerId)}`);
    if (ticket !== this.opening) return;
    if (!result.ok) { Page.banner(errorText(result)); return; }
    this.showInForm(result.body);
    Health.show(providerId);
  },

  showInForm(provider) {
    if (this.current && (!provider || provider.id !== this.current.id)) clearInterval(this.poll);
    this.current = provider;
    Form.clearProblems();
    Form.write(provider);
    byId("field-id").readOnly = Boolean(provider);
    byId("form-title").textContent = provider ? `Provider connection ${provider.id}` : "New provider connection";
    show(byId("generate-consent"), Boolean(provider));
    show(byId("verify"), Boolean(provider));
    show(byId("verify-results"), false);
    this.showConsent(provider);
    if (provider && provider.verify) Verify.render(provider.verify);
  },

  showConsent(provider) {
    const box = byId("consent-state");
    show(box, Boolean(provider));
    if (!provider) return;
    const consent = provider.consent || {};
    const parts = [`Consent: ${consent.status}`];
    if (consent.upn) parts.push(`by ${consent.upn}`);
    if (consent.consentedAt) parts.push(`at ${shortDate(consent.consentedAt)}`);
    if (consent.pendingSince) parts.push(`(a new link is out since ${shortDate(consent.pendingSince)})`);
    if (consent.error) parts.push(`— ${consent.error}`);
    box.textContent = parts.join(" ");
    box.dataset.status = consent.status;
    byId("dialog-consent-state").textContent = box.textContent;
  },

  async save(event) {
    event.preventDefault();
    Form.clearProblems();
    const id = byId("field-id").value.trim();
    if (!id) { Form.problem("id", "is required"); return; }
    byId("form-status").textContent = "Saving…";
    const result = await Api.call("PUT", `providers/${encodeURIComponent(id)}`, Form.read());
    if (!result.ok) {
      byId("form-status").textContent = errorText(result);
      Form.showProblems((result.body && result.body.problems) || {});
      return;
    }
    byId("form-status").textContent = result.status === 201 ? "Created." : "Saved.";
    this.showInForm(result.body);
    await this.load();
    Health.show(result.body.id);
  },

  async generateConsent() {
    const id = this.current.id;
    const result = await Api.call("GET", `providers/${encodeURIComponent(id)}/consent-link`);
    if (!result.ok) {
      byId("form-status").textContent = errorText(result);
      Form.showProblems((result.body && result.body.problems) || {});
      return;
    }
    const state = new URL(result.body.consentUrl).searchParams.get("state");
    byId("consent-link").value = `${location.origin}/api/admin/consent?state=${encodeURIComponent(state)}`;
    fill(byId("consent-instructions"), (result.body.instructions || []).map((line) => el("li", { text: line })));
    byId("copy-status").textContent = "";
    byId("consent-dialog").showModal();
    this.watchConsent(id, this.current.consent || {});
  },

  // Poll the provider until the consent that was current when the link was made is replaced.
  watchConsent(providerId, before) {
    clearInterval(this.poll);
    const started = Date.now();
    this.poll = setInterval(async () => {
      if (Date.now() - started > POLL_LIMIT_MS) { clearInterval(this.poll); return; }
      const result = await Api.call("GET", `providers/${encodeURIComponent(providerId)}`);
      if (!result.ok) return;
      const consent = result.body.consent || {};
      if (consent.status === "active" && consent.consentedAt !== before.consentedAt) {
        clearInterval(this.poll);
        this.showInForm(result.body);
        byId("dialog-consent-state").textContent = `Consent is active (${consent.upn || "integration user"}). Next: Verify Connectivity.`;
        this.load();
      } else if (this.current && this.current.id === providerId) {
        this.showConsent(result.body);
      }
    }, POLL_MS);
  },

  async copyLink() {
    const input = byId("consent-link");
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      byId("copy-status").textContent = "Copied.";
    } catch (e) {
      byId("copy-status").textContent = "Selected: press Ctrl+C to copy.";
    }
  },
};

const Form = {
  fields() { return Array.from(document.querySelectorAll("#provider-form .field[data-kind]")); },

  read() {
    const body = {};
    for (const field of this.fields()) {
      const key = field.dataset.key;
      const input = byId("field-" + key);
      const kind = field.dataset.kind;
      if (kind === "checkbox") body[key] = input.checked;
      else if (kind === "multi") body[key] = Array.from(input.selectedOptions).map((o) => o.value);
      else if (input.value.trim() !== "") body[key] = input.value.trim(); // empty: the field's default
    }
    return body;
  },

  write(provider) {
    byId("field-id").value = provider ? provider.id : "";
    for (const field of this.fields()) {
      const key = field.dataset.key;
      const input = byId("field-" + key);
      const value = provider ? provider[key] : undefined;
      const kind = field.dataset.kind;
      if (kind === "checkbox") input.checked = provider ? Boolean(value) : input.defaultChecked;
      else if (kind === "multi") {
        const chosen = new Set((value || []).map(String));
        for (const option of input.options) option.selected = chosen.has(option.value);
      } else input.value = value === undefined || value === null ? (provider ? "" : input.defaultValue) : String(value);
    }
  },

  problem(key, message) {
    const target = byId("problem-" + key);
    if (target) {
      target.textContent = message;
      target.closest(".field").classList.add("invalid");
      return true;
    }
    return false;
  },

  showProblems(problems) {
    const other = [];
    for (const [key, message] of Object.entries(problems)) {
      if (!this.problem(key, message)) other.push(`${key}: ${message}`);
    }
    if (other.length) byId("form-status").textContent += " — " + other.join("; ");
  },

  clearProblems() {
    for (const node of document.querySelectorAll("#provider-form .problem")) node.textContent = "";
    for (const node of document.querySelectorAll("#provider-form .invalid")) node.classList.remove("invalid");
  },
};

const Verify = {
  async run() {
    const id = Providers.current.id;
    byId("verify-summary").textContent = "running…";
    show(byId("verify-results"), true);
    const result = await Api.call("POST", `providers/${encodeURIComponent(id)}/verify`);
    if (!result.ok) { byId("verify-summary").textContent = errorText(result); return; }
    this.render(result.body);
    Providers.load();
  },

  render(report) {
    show(byId("verify-results"), true);
    const failed = (report.checks || []).filter((c) => !c.passed);
    byId("verify-summary").textContent = report.passed ? "— all checks passed" :
      `— ${failed.length} check(s) failed (${shortDate(report.checkedAt)})`;
    const rows = (report.checks || []).map((check) => el("tr", { "data-check": check.name, className: check.passed ? "pass" : "fail" },
      el("td", { text: check.name }),
      el("td", { className: "result", text: check.passed ? "pass" : "FAIL" }),
      el("td", { text: check.evidence }),
      el("td", { className: "fix", text: check.passed ? "" : check.fix }),
      el("td", { className: "redo", text: check.passed ? "" : redoStep(check.name) })));
    fill(byId("verify-results").querySelector("tbody"), rows);
  },
};

function redoStep(checkName) {
  const number = SETUP.redo[checkName] || 5;
  const step = SETUP.steps.find((s) => s.step === number);
  return `Step ${number}: ${step ? step.title : ""}`;
}

function daysLeft(expiresAt) {
  if (!expiresAt) return "—";
  const days = Math.floor((new Date(expiresAt).getTime() - Date.now()) / 86400000);
  return days < 0 ? "expired" : String(days);
}
