// Helpers for the edge integration tests: the built worker in workerd (wrangler dev, started by
// `cargo xtask test`), reached with real HTTP and WebSocket clients. EDGEMEET_URL points at it.
import { after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { spawn } from "node:child_process";

export const BASE = process.env.EDGEMEET_URL;
export const SECRET = process.env.EDGEMEET_CONTROL_SECRET;
assert.ok(BASE && SECRET, "run through `cargo xtask test` (EDGEMEET_URL, EDGEMEET_CONTROL_SECRET)");
export const WS_BASE = BASE.replace(/^http/, "ws");

/** The control-plane signature header of a POST to `path` (default: the heartbeat route). */
export function sign(body, t = Date.now(), secret = SECRET, path = "/api/sfu/heartbeat") {
  const mac = createHmac("sha256", secret).update(`${t}\nPOST\n${path}\n${body}`).digest("hex");
  return `t=${t},v1=${mac}`;
}

/** A signed POST of `body` (an object) to an SFU callback route, as an SFU would send it. */
export async function signedPost(path, body) {
  const text = JSON.stringify(body);
  return fetch(`${BASE}${path}`, { method: "POST", body: text, headers: { "x-edgemeet-signature": sign(text, Date.now(), SECRET, path) } });
}

/** A made-up client address (the dev-only header): joins are rate-limited per address, and these
 *  tests stand in for many people on one machine. */
export function newAddr() {
  const b = () => Math.floor(Math.random() * 256);
  return `198.18.${b()}.${b()}`;
}

/** The same made-up address for everything about one room (wrong passwords count per address). */
export function addrFor(room) {
  let h = 0;
  for (const c of room) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `198.19.${(h >> 8) & 255}.${h & 255}`;
}

export const FRANKFURT = "50.11,8.68";
export const SINGAPORE = "1.29,103.85";

export async function join(room, name = "Tester", location = undefined, headers = {}) {
  const res = await fetch(`${BASE}/api/rooms/${room}/join`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-edgemeet-dev-addr": newAddr(), ...(location ? { "x-edgemeet-dev-location": location } : {}), ...headers },
    body: JSON.stringify({ name }),
  });
  return { status: res.status, body: await res.json() };
}

const sockets = [];
after(() => sockets.forEach((ws) => ws.close()));

/** A WebSocket with a queue of received JSON frames and a close promise. */
export function connect(path) {
  const ws = new WebSocket(`${WS_BASE}${path}`);
  sockets.push(ws);
  const frames = [];
  const waiters = [];
  ws.addEventListener("message", (ev) => {
    frames.push(JSON.parse(ev.data));
    waiters.splice(0).forEach((w) => w());
  });
  const closed = new Promise((resolve) => ws.addEventListener("close", (ev) => resolve({ code: ev.code, reason: ev.reason })));
  const opened = new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve);
    ws.addEventListener("error", reject);
  });
  /** Resolves with the first frame (from now on or already queued) matching `pred`. */
  async function next(pred, what = "frame", ms = 5000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      const left = deadline - Date.now();
      assert.ok(left > 0, `timed out waiting for ${what}; got ${JSON.stringify(frames)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, left);
      });
    }
  }
  return { ws, next, frames, closed, opened, send: (m) => ws.send(typeof m === "string" ? m : JSON.stringify(m)) };
}

export const room = () => `it-${Math.random().toString(36).slice(2, 10)}`;

/** Holds a room socket in a child process, so killing it drops the connection (no close frame). */
export async function droppableSocket(path) {
  const script = `
    const ws = new WebSocket(process.env.URL);
    ws.addEventListener("message", (e) => { if (JSON.parse(e.data).type === "snapshot") console.log("ready"); });
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["-e", script], { env: { ...process.env, URL: `${WS_BASE}${path}` } });
  await new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => String(d).includes("ready") && resolve());
    child.on("exit", (code) => reject(new Error(`socket holder exited ${code}`)));
  });
  return child;
}


/** A browser stand-in: its cookies, its address, and same-origin headers on every request. */
export function accountBrowser() {
  const jar = new Map();
  const addr = newAddr();
  const b = {
    jar,
    addr,
    async req(method, path, body, headers = {}) {
      const h = { "sec-fetch-site": "same-origin", origin: BASE, "x-edgemeet-dev-addr": addr, ...headers };
      if (jar.size) h.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
      if (body !== undefined) h["content-type"] ??= "application/json";
      const started = performance.now();
      const res = await fetch(`${BASE}${path}`, { method, headers: h, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
      const ms = performance.now() - started;
      const cookies = res.headers.getSetCookie();
      for (const c of cookies) {
        const [kv] = c.split(";");
        const i = kv.indexOf("=");
        const [k, v] = [kv.slice(0, i), kv.slice(i + 1)];
        if (/Max-Age=0/.test(c)) jar.delete(k); else jar.set(k, v);
      }
      const text = await res.text();
      let json = null;
      try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
      return { status: res.status, json, text, cookies, headers: res.headers, ms };
    },
  };
  return b;
}

