// pcsync admin page, function key mode: the key prompt. GET /api/admin is only this prompt
// (401, no data); the page's markup comes from /api/admin/shell, which the Functions host serves
// only with a valid key, and the page's own scripts start once it is in place.
"use strict";

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error("could not load " + src));
    document.body.append(script);
  });
}

const Shell = {
  loaded: false,

  // The page's markup with the key; false when the key was refused.
  async load() {
    const result = await Api.call("GET", "admin/shell");
    if (result.status === 401 || result.status === 403) return false;
    if (!result.ok) throw new Error(errorText(result));
    const markup = new DOMParser().parseFromString(String(result.body), "text/html");
    const scripts = [];
    // the parser puts what comes before the first element of the body (the JSON data block) in the head
    for (const node of [...markup.head.childNodes, ...markup.body.childNodes]) {
      if (node.nodeName === "SCRIPT" && node.getAttribute("src")) scripts.push(node.getAttribute("src"));
      else byId("shell").append(document.adoptNode(node));
    }
    for (const src of scripts) await loadScript(src); // in order: each builds on the one before
    this.loaded = true;
    return true;
  },
};

const SignIn = {
  show(message) {
    const app = byId("app");
    if (app) show(app, false);
    show(byId("signout"), false);
    show(byId("signin"), true);
    byId("signin-error").textContent = message;
    byId("function-key").focus();
  },

  async submit(event) {
    event.preventDefault();
    const key = byId("function-key").value.trim();
    if (!key) return;
    Api.setKey(key);
    byId("function-key").value = "";
    await this.enter("The app refused this key.");
  },

  // With a key in this session: the page (its scripts start it when first loaded), else the prompt again.
  async enter(refused) {
    show(byId("signin"), false);
    const again = Shell.loaded;
    try {
      if (!(again ? await this.keyWorks() : await Shell.load())) {
        Api.forgetKey();
        this.show(refused);
      } else if (again) {
        Page.start();
      }
    } catch (error) {
      this.show(error.message);
    }
  },

  async keyWorks() {
    const check = await Api.call("GET", "providers");
    return check.status !== 401 && check.status !== 403;
  },
};

Api.onUnauthorized = () => { Api.forgetKey(); SignIn.show("The key was refused; enter it again."); };

byId("signin-form").addEventListener("submit", (event) => SignIn.submit(event));
byId("signout").addEventListener("click", () => { Api.forgetKey(); SignIn.show(""); });

if (Api.key()) SignIn.enter("The key of this session was refused; enter it again.");
else SignIn.show("");
