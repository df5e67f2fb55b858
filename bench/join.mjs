// Join click → first remote video frame decoded, over N joins (default 20), against a
// running stack (EDGEMEET_URL). Prints a table; not a pass/fail test. Run by `cargo xtask bench`.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { devAddr, CHROMIUM_ARGS } from "../playwright/browser.mjs";

const BASE = process.env.EDGEMEET_URL;
const N = Number(process.env.EDGEMEET_BENCH_JOINS || 20);
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask bench`)");

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "edgemeet-bench-")), {
  executablePath: process.env.EDGEMEET_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: CHROMIUM_ARGS,
  permissions: ["camera", "microphone"],
  viewport: { width: 1280, height: 800 },
});

async function enter(page, name, room) {
  if (process.env.DEBUG_SIG) await page.addInitScript(() => {
    window.__sig = [];
    const WS = window.WebSocket;
    window.WebSocket = class extends WS {
      constructor(...a) { super(...a); this.addEventListener("message", (e) => window.__sig.push("< " + JSON.parse(e.data).type + " " + Math.round(performance.now()))); }
      send(d) { window.__sig.push("> " + JSON.parse(d).type + " " + Math.round(performance.now())); return super.send(d); }
    };
  });
  await page.goto(`${BASE}/${room}`);
  await page.getByLabel("Your name").fill(name);
  // In-page clocks: the click, and the first remote video frame decoded (getStats polled every 10 ms).
  await page.evaluate(() => {
    window.__bench = {};
    document.querySelector("form.join button[type=submit]").addEventListener("click", () => {
      window.__bench.click = performance.now();
      let busy = false;
      const timer = setInterval(async () => {
        if (busy || !window.edgemeetPc) return;
        busy = true;
        const stats = await window.edgemeetPc.getStats();
        stats.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0 && window.__bench.frame === undefined) {
            window.__bench.frame = performance.now();
            clearInterval(timer);
          }
        });
        busy = false;
      }, 10);
    }, { capture: true });
  });
  await page.getByRole("button", { name: "Join" }).click();
}

const room = `bench-${Math.random().toString(36).slice(2, 8)}`;
const anchor = await context.newPage();
await enter(anchor, "Anchor", room);
await anchor.getByRole("group", { name: "Anchor (you)" }).waitFor({ timeout: 10000 });

const samples = [];
for (let i = 0; i < N; i++) {
  const page = await context.newPage();
  await page.setExtraHTTPHeaders({ "x-edgemeet-dev-addr": devAddr() }); // joins are limited per address
  await enter(page, `Joiner ${i + 1}`, room);
  try {
    await page.waitForFunction(() => window.__bench.frame !== undefined, null, { timeout: 15000, polling: 20 });
  } catch (e) {
    const why = await page.evaluate(async () => {
      const pc = window.edgemeetPc;
      const o = { conn: pc?.connectionState, signaling: pc?.signalingState, inbound: [] };
      (await pc?.getStats())?.forEach((s) => s.type === "inbound-rtp" && o.inbound.push([s.kind, s.trackIdentifier, s.packetsReceived, s.framesDecoded, s.pliCount]));
      return o;
    });
    console.log(`join ${i + 1}: no remote frame in 15 s: ${JSON.stringify(why)}`);
    if (process.env.DEBUG_SIG) console.log(JSON.stringify(await page.evaluate(() => window.__sig)), JSON.stringify(await anchor.evaluate(() => window.__sig)));
    throw e;
  }
  const { click, frame } = await page.evaluate(() => window.__bench);
  samples.push(frame - click);
  await page.getByRole("button", { name: "Leave" }).click();
  await page.close();
}
await context.close();

console.log("in order:", samples.map((s) => s.toFixed(0)).join(" "));
samples.sort((a, b) => a - b);
const pct = (p) => samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))];
const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const row = (k, v) => console.log(`  ${k.padEnd(28)}${v}`);
console.log(`\njoin click → first remote frame (${N} joins into a room with one publisher, localhost)`);
row("p50", `${pct(50).toFixed(0)} ms`);
row("p95", `${pct(95).toFixed(0)} ms`);
row("min / max", `${samples[0].toFixed(0)} / ${samples[samples.length - 1].toFixed(0)} ms`);
row("machine", `${cpus().length} cores, load average ${load}`);
