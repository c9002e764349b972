// pcsync admin page: the start and the wiring of buttons to their actions (the key prompt of the
// function key mode is signin.js).
"use strict";

const Page = {
  banner(text) {
    const node = byId("banner");
    node.textContent = text;
    show(node, Boolean(text));
  },

  async start() {
    show(byId("app"), true);
    show(byId("signout"), Api.mode === "function_key");
    const providers = await Providers.load();
    if (providers.length) Providers.open(providers[0].id);
    else Providers.showInForm(null);
  },
};

byId("provider-form").addEventListener("submit", (event) => Providers.save(event));
byId("new-provider").addEventListener("click", () => { Providers.opening++; Providers.showInForm(null); });
byId("generate-consent").addEventListener("click", () => Providers.generateConsent());
byId("copy-link").addEventListener("click", () => Providers.copyLink());
byId("verify").addEventListener("click", () => Verify.run());
byId("writeback-filters").addEventListener("submit", (event) => { event.preventDefault(); Health.writebacks(false); });
byId("writebacks-more").addEventListener("click", () => Health.writebacks(true));

Page.start();
