// The page's entry point: resume the saved session or show the login form, then the chat.

import { TroupeClient, type SessionResult } from "../client/index.ts";
import { App } from "./app.ts";
import { h, replaceChildren } from "./dom.ts";
import { errorText } from "./format.ts";

/** Where the page keeps its session token between visits. */
const TOKEN_KEY = "troupe.token";

/** The node that served this page is the node to talk to. */
function webSocketUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** A client for this page: when its session ends (logout, revoked, expired), start over. */
function newClient(): TroupeClient {
  const client = new TroupeClient({ url: webSocketUrl() });
  client.on("state", (state) => {
    if (state === "signed_out") {
      localStorage.removeItem(TOKEN_KEY);
      location.reload();
    }
  });
  return client;
}

/** Shows the chat for a client that just logged in or resumed, and keeps its token. */
function start(root: HTMLElement, client: TroupeClient, session: SessionResult): void {
  if (client.token !== null) localStorage.setItem(TOKEN_KEY, client.token);
  new App(client, root, session.groups);
}

function boot(): void {
  const root = document.getElementById("app");
  if (root === null) return;
  const token = localStorage.getItem(TOKEN_KEY);
  if (token === null) {
    showLogin(root);
    return;
  }
  replaceChildren(root, h("p", { class: "boot", "data-testid": "connecting" }, "Connecting…"));
  // An invalid token ends in signed_out, which forgets it and reloads into the login form.
  // An unreachable node does not: the client keeps reconnecting, and the chat starts when
  // it is through.
  const client = newClient();
  client.resume(token).then(
    (session) => start(root, client, session),
    () => {
      const stop = client.on("state", (state) => {
        if (state === "ready" && client.session !== null) {
          stop();
          start(root, client, client.session);
        }
      });
    },
  );
}

/** The login form; "Create account" registers and then logs in with the same fields. */
function showLogin(root: HTMLElement): void {
  const client = newClient();
  const username = h("input", { name: "username", autocomplete: "username", autocapitalize: "none", required: true, minlength: 3, maxlength: 32, "data-testid": "username" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, minlength: 8, "data-testid": "password" });
  const nickname = h("input", { name: "nickname", maxlength: 64, placeholder: "optional", "data-testid": "nickname" });
  const error = h("p", { class: "dialog-error", role: "alert", "data-testid": "login-error" });
  const loginButton = h("button", { type: "submit", class: "primary", "data-testid": "login" }, "Log in");
  const registerButton = h("button", { type: "button", "data-testid": "register" }, "Create account");
  const form = h(
    "form",
    { class: "login" },
    h("h1", {}, "troupe"),
    h("label", {}, "Username", username),
    h("label", {}, "Password", password),
    h("label", {}, "Nickname (new accounts)", nickname),
    h("div", { class: "buttons" }, loginButton, registerButton),
    error,
  );
  const run = async (register: boolean) => {
    if (!form.reportValidity()) return;
    error.textContent = "";
    loginButton.disabled = registerButton.disabled = true;
    try {
      if (register) {
        const name = nickname.value.trim();
        await client.register({ username: username.value.trim(), password: password.value, ...(name === "" ? {} : { nickname: name }) });
      }
      start(root, client, await client.login(username.value.trim(), password.value));
    } catch (failure) {
      error.textContent = errorText(failure);
      loginButton.disabled = registerButton.disabled = false;
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void run(false);
  });
  registerButton.addEventListener("click", () => void run(true));
  root.className = "app";
  replaceChildren(root, form);
  username.focus();
}

boot();
