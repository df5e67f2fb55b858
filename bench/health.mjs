// The call's health, measured (issue 17). Not a pass/fail test. Run by `cargo xtask bench`.
// 1. Glass to glass: three people on 127.0.0.1, windows big enough that every remote tile asks for
//    1280×720; each page's remote videos sampled every 250 ms for SECONDS (capture time from the
//    absolute-capture-time extension the SFU forwards, each frame once): p50/p95 over all six
//    pairs and per pair, and the widths that arrived.
// 2. The pre-join network check, RUNS times on a fresh pre-join page: each path's round trip,
//    the upload estimate, how long the check took, and its words.
import { launch } from "../playwright/browser.mjs";
import { joinAs, latencies, inbound } from "../playwright/call.mjs";

const BASE = process.env.EDGEMEET_URL;
const SECONDS = Number(process.env.EDGEMEET_BENCH_SECONDS || 20);
const RUNS = 3;
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask bench`)");

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

const context = await launch();
try {
  const room = `bench-health-${Math.random().toString(36).slice(2, 8)}`;
  const names = ["Grace", "Alan", "Ada"];
  const pages = [];
  for (const n of names) {
    const p = await joinAs(context, BASE, n, room);
    await p.setViewportSize({ width: 2200, height: 1400 });
    pages.push(p);
  }
  const widths = async () =>
    (await Promise.all(pages.map(async (p) => Object.values(await inbound(p)).filter((x) => x.kind === "video").map((x) => x.frameWidth ?? 0)))).flat();
  // Layers climb within seconds (upgrades wait 1.5 s on a steady layer); at most 20 s.
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const w = await widths();
    if (w.length === 6 && w.every((x) => x === 1280)) break;
    await pages[0].waitForTimeout(500);
  }
  const samples = {};
  const t0 = Date.now();
  while (Date.now() - t0 < SECONDS * 1000) {
    for (const [i, p] of pages.entries()) {
      for (const [who, s] of Object.entries(await latencies(p))) {
        const k = `${names[i]}←${who.slice(0, 6)}`;
        samples[k] ??= new Map();
        samples[k].set(s.at, s.ms);
      }
    }
    await pages[0].waitForTimeout(250);
  }
  const all = Object.values(samples).flatMap((m) => [...m.values()]).sort((a, b) => a - b);
  console.log(
    `glass to glass, 3 participants at 720p asked (arrived: ${(await widths()).map((w) => `${w}px`).join(" ")}), ${SECONDS} s: ` +
      `p50 ${pct(all, 0.5).toFixed(0)} ms, p95 ${pct(all, 0.95).toFixed(0)} ms, max ${all[all.length - 1].toFixed(0)} ms (${all.length} frames)`,
  );
  for (const [k, m] of Object.entries(samples)) {
    const xs = [...m.values()].sort((a, b) => a - b);
    console.log(`  ${k}: p50 ${pct(xs, 0.5).toFixed(0)} ms, p95 ${pct(xs, 0.95).toFixed(0)} ms (${xs.length} frames)`);
  }
  for (const p of pages) await p.close();

  // The pre-join check.
  for (let run = 1; run <= RUNS; run++) {
    const page = await context.newPage();
    const opened = Date.now();
    await page.goto(`${BASE}/bench-netcheck-${run}-${Math.random().toString(36).slice(2, 6)}`);
    const line = page.getByTestId("netcheck");
    let text = "";
    while (Date.now() - opened < 30000) {
      text = (await line.textContent()).trim();
      if (text && !/^(Not checked yet|Checking your connection)/.test(text)) break;
      await page.waitForTimeout(100);
    }
    const seen = await page.evaluate(() => window.edgemeetNetcheck);
    const rtt = (o) => (o?.outcome === "works" ? `${o.rtt_ms ?? "?"} ms` : o?.outcome);
    console.log(
      `pre-join check ${run}: "${text}" — direct ${rtt(seen?.direct)}, relay UDP ${rtt(seen?.relay_udp)}, relay TCP ${rtt(seen?.relay_tcp)}, ` +
        `upload ${seen?.upload_kbps ?? "?"} kbit/s; page open → result ${Date.now() - opened} ms (the automatic run starts 1.5 s in)`,
    );
    await page.close();
  }
} finally {
  await context.close();
}
