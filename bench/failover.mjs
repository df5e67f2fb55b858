// Failover and drain times against a running stack (EDGEMEET_URL): 10 × kill -9 and 5 × SIGTERM
// of a room's SFU in a two-page call; time until both pages decode remote video again. Prints a
// table; not a pass/fail test. Run by `cargo xtask bench`. The stack restarts each SFU 3 s after
// it exits; every round waits until all three are live again.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { CHROMIUM_ARGS } from "../playwright/browser.mjs";
import { moveAfter } from "../playwright/call.mjs";

const BASE = process.env.EDGEMEET_URL;
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask bench`)");
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "edgemeet-bench-")), {
  executablePath: process.env.EDGEMEET_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: CHROMIUM_ARGS,
  permissions: ["camera", "microphone"],
});

async function allLive() {
  for (;;) {
    const h = await (await fetch(`${BASE}/api/health`)).json();
    if (h.live_sfus === 3 && h.sfus.every((s) => !s.heartbeat?.draining && !s.draining)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

const runs = { SIGKILL: [], SIGTERM: [] };
for (const [signal, n] of [["SIGKILL", 10], ["SIGTERM", 5]]) {
  for (let i = 0; i < n; i++) {
    await allLive();
    const r = await moveAfter({ context, base: BASE, signal, label: "bench", n: 2, deadlineMs: 20000 });
    runs[signal].push(r.worst);
    console.log(`  ${signal} #${i + 1}: ${r.worst} ms (${r.from} → ${r.to})`);
  }
}
await context.close();

const pct = (v, p) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor((p / 100) * v.length))];
const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
console.log(`\nroom's SFU stopped → both pages decode remote video again (two pages per room, localhost)`);
for (const [signal, what] of [["SIGKILL", "kill -9 (failover)"], ["SIGTERM", "SIGTERM (drain)"]]) {
  const v = runs[signal];
  console.log(`  ${what.padEnd(22)} n=${v.length}  p50 ${pct(v, 50)} ms  p95 ${pct(v, 95)} ms  max ${Math.max(...v)} ms`);
}
console.log(`  machine: ${cpus().length} cores, load average ${load}`);
