import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_ARGS } from "../playwright/browser.mjs";
const BASE = "http://127.0.0.1:8899";
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "d-")), { executablePath: "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS, permissions: ["camera", "microphone"] });
await ctx.addInitScript(() => {
  window.__t = [];
  const mark = (w) => window.__t.push([w, Math.round(performance.now())]);
  window.__mark = mark;
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...a) { super(...a); mark("ws new"); this.addEventListener("open", () => mark("ws open")); this.addEventListener("message", (e) => mark("recv " + JSON.parse(e.data).type)); }
    send(d) { mark("send " + JSON.parse(d).type); return super.send(d); }
  };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(...a) { super(...a); mark("pc new"); this.addEventListener("icegatheringstatechange", () => mark("gather " + this.iceGatheringState)); this.addEventListener("connectionstatechange", () => mark("conn " + this.connectionState)); this.addEventListener("track", (e) => mark("track " + e.track.kind)); }
  };
  const f = window.fetch; window.fetch = async (...a) => { mark("fetch " + a[0]); const r = await f(...a); mark("fetched"); return r; };
});
const room = "diag-" + Math.random().toString(36).slice(2, 6);
const a = await ctx.newPage(); await a.goto(`${BASE}/${room}`); await a.getByLabel("Your name").fill("A"); await a.getByRole("button", { name: "Join" }).click();
await a.getByRole("group", { name: "A (you)" }).waitFor();

for (let k = 0; k < 1; k++) {
const b = await ctx.newPage(); await b.goto(`${BASE}/${room}`); await b.getByLabel("Your name").fill("B" + k);
await b.evaluate(() => { document.querySelector("form.join button[type=submit]").addEventListener("click", () => { window.__mark("click"); const t = setInterval(async () => { if (!window.edgemeetPc) return; (await window.edgemeetPc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") { if (s.packetsReceived > 0 && !window.__p) { window.__p = 1; window.__mark("PKT"); } if (s.framesDecoded > 0 && !window.__f) { window.__f = 1; window.__mark("FRAME"); clearInterval(t); } } }); }, 10); }, { capture: true }); });
await b.getByRole("button", { name: "Join" }).click();
try { await b.waitForFunction(() => window.__t.some((x) => x[0] === "FRAME"), null, { timeout: 8000 }); } catch (e) { console.log("FAILED"); }
console.log("A:", JSON.stringify(await a.evaluate(() => window.__t)));
const t = await b.evaluate(() => window.__t);
const t0 = t.find((x) => x[0] === "click")[1];
console.log(t.map(([w, ts]) => `${w.replace("recv ", "<").replace("send ", ">")}@${ts - t0}`).join("  "));
await b.getByRole("button", { name: "Leave" }).click(); await b.close();
}
await ctx.close();
