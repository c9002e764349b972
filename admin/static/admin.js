// pcsync admin page: sign-in (function key mode) and the wiring of buttons to their actions.
"use strict";

const Page = {
  banner(text) {
    const node = byId("banner");
    node.textContent = text;
    show(node, Boolean(text));
  },

  async start() {
    if (Api.needsKey()) { this.showSignIn(""); return; }
    show(byId("signin"), false);
    show(byId("app"), true);
    show(byId("signout"), Api.mode === "function_key");
    const providers = await Providers.load();
    if (providers.length) Providers.open(providers[0].id);
    else Providers.showInForm(null);
  },

  showSignIn(message) {
    show(byId("app"), false);
    show(byId("signin"), true);
    byId("signin-error").textContent = message;
    byId("function-key").focus();
  },

  async signIn(event) {
    event.preventDefault();
    const key = byId("function-key").value.trim();
    if (!key) return;
    Api.setKey(key);
    byId("function-key").value = "";
    const check = await Api.call("GET", "providers");
    if (check.status === 401 || check.status === 403) {
      Api.forgetKey();
      this.showSignIn("The app refused this key.");
      return;
    }
    this.start();
  },
};

Api.onUnauthorized = () => { Api.forgetKey(); Page.showSignIn("The key was refused; enter it again."); };

byId("signin-form").addEventListener("submit", (event) => Page.signIn(event));
byId("signout").addEventListener("click", () => { Api.forgetKey(); Page.showSignIn(""); });
byId("provider-form").addEventListener("submit", (event) => Providers.save(event));
byId("new-provider").addEventListener("click", () => { Providers.opening++; Providers.showInForm(null); });
byId("generate-consent").addEventListener("click", () => Providers.generateConsent());
byId("copy-link").addEventListener("click", () => Providers.copyLink());
byId("verify").addEventListener("click", () => Verify.run());
byId("writeback-filters").addEventListener("submit", (event) => { event.preventDefault(); Health.writebacks(false); });
byId("writebacks-more").addEventListener("click", () => Health.writebacks(true));

Page.start();
