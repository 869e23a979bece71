"use strict";
// Sluice admin UI: plain DOM, same-origin calls to /admin/v1 with the signed-in admin token.
// Everything shown comes from the API and is set as text (never parsed as HTML), so a tenant
// or key named like markup stays text. The token lives in sessionStorage: gone with the tab.

const api = "/admin/v1";
const tokenKey = "sluice-admin-token";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(tokenKey);
let tenantsCursor = null;

// ---- small helpers ----------------------------------------------------------------------

/** An element with attributes (`on…` ones become listeners) and children (strings become text). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function rows(tableID, items, cells) {
  const body = $(tableID).tBodies[0];
  body.replaceChildren(...items.map((item) => el("tr", {}, ...cells(item).map((cell) =>
    cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell)))));
}

const number = (value) => el("td", {class: "number"}, value == null ? "" : Number(value).toLocaleString("en-US"));
const day = (iso) => (iso ? iso.slice(0, 10) : "");
const time = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "");
const usd = (microUSD) => (Number(microUSD) / 1e6).toFixed(6);

function notice(text, ok = false) {
  const box = $("notice");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

/** Calls the admin API; a refused token signs out, any other error is thrown with the API's message. */
async function call(method, path, body) {
  const headers = {authorization: "Bearer " + token};
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(api + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  if (response.status === 401) {
    signOut("The token was refused or has expired: sign in again.");
    throw new Error("signed out");
  }
  const text = await response.text();
  const payload = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((payload && payload.error && payload.error.message) || "HTTP " + response.status);
  return payload;
}

/** Runs an action, showing its error (or `done`) in the notice line. */
async function attempt(action, done) {
  try {
    await action();
    notice(done || "", true);
  } catch (error) {
    if (error.message !== "signed out") notice(error.message);
  }
}

// ---- signing in -------------------------------------------------------------------------

/** The token's claims, for display and navigation only: the API decides what a token may do. */
function claims() {
  return payloadOf(token);
}

function payloadOf(jwt) {
  try {
    return JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return {};
  }
}

function signIn(newToken) {
  token = newToken.trim();
  sessionStorage.setItem(tokenKey, token);
  route();
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(tokenKey);
  location.hash = "";
  route();
  if (message) notice(message);
}

const randomText = (bytes) => base64url(crypto.getRandomValues(new Uint8Array(bytes)));
const base64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const redirectURI = () => location.origin + "/admin/ui/";

/** OpenID Connect, authorization code with PKCE (a public client): to the provider and back. */
async function startOIDC(oidc) {
  const discovery = await (await fetch(oidc.issuer.replace(/\/$/, "") + "/.well-known/openid-configuration")).json();
  const verifier = randomText(32);
  const state = randomText(16);
  const nonce = randomText(16);
  sessionStorage.setItem("sluice-oidc", JSON.stringify({verifier, state, nonce, token_endpoint: discovery.token_endpoint}));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const query = new URLSearchParams({
    response_type: "code", client_id: oidc.client_id, redirect_uri: redirectURI(), scope: oidc.scope,
    state, nonce, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(discovery.authorization_endpoint + "?" + query);
}

/** Back from the provider with `?code=…&state=…`: trades the code for an ID token. */
async function finishOIDC(oidc) {
  const query = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem("sluice-oidc") || "null");
  sessionStorage.removeItem("sluice-oidc");
  history.replaceState(null, "", location.pathname);
  if (query.get("error")) throw new Error("the identity provider refused: " + query.get("error"));
  if (!pending || query.get("state") !== pending.state) throw new Error("the sign-in answer does not match a sign-in started here");
  const response = await fetch(pending.token_endpoint, {
    method: "POST",
    headers: {"content-type": "application/x-www-form-urlencoded"},
    body: new URLSearchParams({
      grant_type: "authorization_code", code: query.get("code"), redirect_uri: redirectURI(),
      client_id: oidc.client_id, code_verifier: pending.verifier,
    }),
  });
  const answer = await response.json();
  if (!response.ok || !answer.id_token) throw new Error("the identity provider gave no ID token");
  // The API checks the signature, issuer and audience; the nonce ties the token to this sign-in.
  if (payloadOf(answer.id_token).nonce !== pending.nonce) throw new Error("the ID token is not for this sign-in");
  signIn(answer.id_token);
}

// ---- views ------------------------------------------------------------------------------

function show(sectionID) {
  for (const id of ["sign-in", "tenants", "tenant"]) $(id).hidden = id !== sectionID;
  $("nav").hidden = sectionID === "sign-in";
}

async function route() {
  notice("");
  if (!token) return show("sign-in");
  const who = claims();
  $("caller").textContent = [who.sub, who.role || (who.groups ? "OIDC" : "")].filter(Boolean).join(" · ");
  const match = location.hash.match(/^#\/tenants\/([0-9a-f-]{36})$/i);
  if (match) return attempt(() => showTenant(match[1]));
  if (who.role && who.role !== "platform_admin" && who.tenant) {
    location.hash = "#/tenants/" + who.tenant;  // a tenant's admin sees that tenant only
    return;
  }
  return attempt(() => showTenants(false));
}

function limitCells(limits) {
  const budget = (value) => (value == null ? "" : "$" + Number(value).toFixed(2));
  return [number(limits.requests_per_minute), number(limits.tokens_per_minute), number(limits.max_concurrent_requests),
    budget(limits.monthly_budget_usd), budget(limits.daily_budget_usd)];
}

async function showTenants(more) {
  show("tenants");
  const page = await call("GET", "/tenants?limit=100" + (more && tenantsCursor ? "&after=" + encodeURIComponent(tenantsCursor) : ""));
  tenantsCursor = page.next_after;
  $("tenants-more").hidden = !page.has_more;
  rows("tenant-table", page.data, (tenant) => [
    el("td", {}, el("a", {href: "#/tenants/" + tenant.id}, tenant.name)), ...limitCells(tenant.limits || {}), day(tenant.created_at),
  ]);
}

async function showTenant(id) {
  show("tenant");
  $("secret-box").hidden = true;
  $("delivery-table").hidden = true;
  const tenant = await call("GET", "/tenants/" + id);
  $("tenant").dataset.id = id;
  $("tenant-title").textContent = tenant.name;
  const limits = tenant.limits || {};
  const shown = [["Tenant id", tenant.id], ["Requests per minute", limits.requests_per_minute], ["Tokens per minute", limits.tokens_per_minute],
    ["Concurrent requests", limits.max_concurrent_requests], ["Monthly budget (USD)", limits.monthly_budget_usd],
    ["Daily budget (USD)", limits.daily_budget_usd]];
  for (const [model, modelLimits] of Object.entries(tenant.model_limits || {})) {
    shown.push(["Model " + model, Object.entries(modelLimits).map(([name, value]) => name + " " + value).join(", ")]);
  }
  $("tenant-limits").replaceChildren(...shown.filter(([, value]) => value != null && value !== "")
    .flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
  await Promise.all([showKeys(id), showUsage(id), showWebhooks(id), showAudit(id)]);
}

async function showKeys(tenantID) {
  const page = await call("GET", "/tenants/" + tenantID + "/keys?limit=200");
  rows("key-table", page.data, (key) => {
    const revoked = key.revoked_at != null;
    const actions = revoked ? el("td") : el("td", {},
      el("button", {type: "button", class: "quiet", "data-action": "rotate", onclick: () => rotateKey(key)}, "Rotate"), " ",
      el("button", {type: "button", class: "danger", "data-action": "revoke", onclick: () => revokeKey(key)}, "Revoke"));
    return [el("td", {}, el("code", {}, key.id)), key.name, day(key.created_at), day(key.expires_at),
      el("td", {class: revoked ? "state-revoked" : "state-active"}, revoked ? "revoked " + day(key.revoked_at) : "active"), actions];
  });
}

function showSecret(created) {
  $("secret-value").textContent = created.key;
  $("secret-box").hidden = false;
}

async function rotateKey(key) {
  if (!confirm("Rotate key " + key.name + "? The old secret stops working.")) return;
  await attempt(async () => {
    const created = await call("POST", "/keys/" + key.id + "/rotate", {});
    showSecret(created);
    await showKeys($("tenant").dataset.id);
  }, "Key rotated: copy the new secret below.");
}

async function revokeKey(key) {
  if (!confirm("Revoke key " + key.name + "? Calls with it are refused from now on.")) return;
  await attempt(async () => {
    await call("POST", "/keys/" + key.id + "/revoke");
    await Promise.all([showKeys($("tenant").dataset.id), showAudit($("tenant").dataset.id)]);
  }, "Key revoked.");
}

async function showUsage(tenantID) {
  const report = await call("GET", "/tenants/" + tenantID + "/usage?group_by=day_model");
  // Each group is "YYYY-MM-DD model" (a day has no space, so the first space splits them).
  const entries = report.data.map((row) => {
    const space = row.group.indexOf(" ");
    return {...row, day: row.group.slice(0, space), model: row.group.slice(space + 1)};
  });
  rows("usage-table", entries, (row) => [row.day, row.model, number(row.requests), number(row.prompt_tokens),
    number(row.completion_tokens), el("td", {class: "number"}, usd(row.cost_micro_usd))]);
  drawUsageChart(entries, new Date(report.to));
}

/** Tokens per day for the last 30 days, one stacked bar per day, a colour per model (SVG). */
function drawUsageChart(entries, end) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = (tag, attributes) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  };
  const days = [];
  for (let offset = 29; offset >= 0; offset--) days.push(new Date(end.getTime() - offset * 86400000).toISOString().slice(0, 10));
  const models = [...new Set(entries.map((entry) => entry.model))].sort();
  const colours = ["#2456c7", "#e07b24", "#1e7a3c", "#8e3fb3", "#b3261e", "#2a9bb3", "#7a6a1e", "#5b6678"];
  const tokens = (entry) => Number(entry.prompt_tokens) + Number(entry.completion_tokens);
  const perDay = days.map((date) => entries.filter((entry) => entry.day === date));
  const highest = Math.max(1, ...perDay.map((list) => list.reduce((sum, entry) => sum + tokens(entry), 0)));
  const width = 900, height = 200, left = 60, bar = (width - left) / days.length;
  const chart = svg("svg", {viewBox: `0 0 ${width} ${height + 20}`, role: "img", "aria-label": "tokens per day and model"});
  chart.append(svg("line", {x1: left, y1: height, x2: width, y2: height, stroke: "#d9dee7"}));
  const axis = svg("text", {x: 0, y: 12, "font-size": 11, fill: "#5b6678"});
  axis.textContent = highest.toLocaleString("en-US") + " tokens";
  chart.append(axis);
  perDay.forEach((list, index) => {
    let top = height;
    for (const entry of list) {
      const size = (tokens(entry) / highest) * (height - 20);
      top -= size;
      const rect = svg("rect", {x: left + index * bar + 2, y: top, width: bar - 4, height: size,
        fill: colours[models.indexOf(entry.model) % colours.length], "data-day": entry.day, "data-model": entry.model});
      const title = svg("title", {});
      title.textContent = `${entry.day} ${entry.model}: ${tokens(entry).toLocaleString("en-US")} tokens, ${entry.requests} requests`;
      rect.append(title);
      chart.append(rect);
    }
    if (index % 5 === 0 || index === days.length - 1) {
      const label = svg("text", {x: left + index * bar, y: height + 15, "font-size": 10, fill: "#5b6678"});
      label.textContent = days[index].slice(5);
      chart.append(label);
    }
  });
  const legend = el("div", {class: "legend"}, ...models.map((model, index) => {
    const swatch = el("span", {class: "swatch"});
    swatch.style.background = colours[index % colours.length];  // CSSOM: the policy refuses style attributes
    return el("span", {}, swatch, model);
  }));
  $("usage-chart").replaceChildren(chart, legend);
}

async function showWebhooks(tenantID) {
  const list = await call("GET", "/tenants/" + tenantID + "/webhooks");
  rows("webhook-table", list.data, (hook) => [hook.url, (hook.events || []).join(", ") || "all",
    hook.enabled ? "enabled" : "disabled" + (hook.disabled_reason ? ": " + hook.disabled_reason : ""),
    el("td", {}, el("button", {type: "button", class: "quiet", onclick: () => attempt(() => showDeliveries(hook))}, "Deliveries"))]);
}

async function showDeliveries(hook) {
  const page = await call("GET", "/webhooks/" + hook.id + "/deliveries?limit=50");
  $("delivery-table").hidden = false;
  rows("delivery-table", page.data, (delivery) => [delivery.event_id, delivery.type, delivery.status,
    number((delivery.attempts || []).length), time(delivery.delivered_at)]);
}

async function showAudit(tenantID) {
  const page = await call("GET", "/tenants/" + tenantID + "/audit?limit=100");
  rows("audit-table", page.data, (entry) => [time(entry.at), entry.actor, entry.action, entry.target,
    Object.entries(entry.details || {}).map(([name, value]) => name + "=" + value).join(" ")]);
}

// ---- wiring -----------------------------------------------------------------------------

async function start() {
  const settings = await (await fetch("/admin/ui/settings.json")).json();
  if (settings.oidc) {
    $("oidc-sign-in").hidden = false;
    $("oidc-button").addEventListener("click", () => attempt(() => startOIDC(settings.oidc)));
    if (new URLSearchParams(location.search).has("state")) await attempt(() => finishOIDC(settings.oidc));
  }
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("token").value.trim()) signIn($("token").value);
    $("token").value = "";
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("tenants-more").addEventListener("click", () => attempt(() => showTenants(true)));
  $("tenant-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const limits = {};
    if ($("tenant-rpm").value) limits.requests_per_minute = Number($("tenant-rpm").value);
    if ($("tenant-tpm").value) limits.tokens_per_minute = Number($("tenant-tpm").value);
    if ($("tenant-budget").value) limits.monthly_budget_usd = Number($("tenant-budget").value);
    attempt(async () => {
      const tenant = await call("POST", "/tenants", {name: $("tenant-name").value, limits});
      $("tenant-form").reset();
      location.hash = "#/tenants/" + tenant.id;
    });
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const tenantID = $("tenant").dataset.id;
    attempt(async () => {
      const created = await call("POST", "/tenants/" + tenantID + "/keys", {name: $("key-name").value});
      $("key-form").reset();
      showSecret(created);
      await Promise.all([showKeys(tenantID), showAudit(tenantID)]);
    }, "Key created: copy its secret below.");
  });
  $("secret-copy").addEventListener("click", () => attempt(async () => {
    await navigator.clipboard.writeText($("secret-value").textContent);
  }, "Copied."));
  $("secret-dismiss").addEventListener("click", () => {
    $("secret-value").textContent = "";
    $("secret-box").hidden = true;
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
