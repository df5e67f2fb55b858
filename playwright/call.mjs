// Helpers shared by the failover tests and the failover bench: joining a room, counting decoding
// remote videos, finding an SFU's process.
import { readdirSync, readFileSync } from "node:fs";

/** A new page in `context` that joined `room` as `name`. */
export async function joinAs(context, base, name, room) {
  const page = await context.newPage();
  await page.goto(`${base}/${room}`);
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Join" }).click();
  await page.getByRole("group", { name: `${name} (you)` }).waitFor({ timeout: 10000 });
  return page;
}

/** How many remote videos this page's current PeerConnection is decoding (frames rising since the
 *  previous call). */
export async function decoding(page) {
  return page.evaluate(async () => {
    const pc = window.edgemeetPc;
    if (!pc || pc.connectionState !== "connected") return 0;
    const now = {};
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") now[s.trackIdentifier] = s.framesDecoded ?? 0;
    });
    const before = pc.__frames ?? {};
    pc.__frames = now;
    return Object.entries(now).filter(([k, v]) => v > 0 && v > (before[k] ?? 0)).length;
  });
}

/** The pid of the SFU process listening on `port` (its command line says `--listen 127.0.0.1:<port>`). */
export function sfuPid(port) {
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let argv;
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    const i = argv.indexOf("--listen");
    if (argv[0].endsWith("edgemeet-sfu") && i >= 0 && argv[i + 1] === `127.0.0.1:${port}`) return Number(pid);
  }
  return undefined;
}

/** The SFU id a page's room status names ("… media via <id>"). */
export async function roomSfu(page) {
  return /media via ([\w-]+)/.exec(await page.getByTestId("room-status").textContent())?.[1];
}

/** `n` pages (P1…Pn) in a fresh room decode each other; `signal` goes to the room's SFU; resolves
 *  with the slowest page's time (ms) until it decodes all remote videos again on a new
 *  PeerConnection, and the SFU before and after. `deadlineMs` bounds the wait; `check(pages)` runs
 *  before the pages close. */
export async function moveAfter({ context, base, signal, label, n = 3, deadlineMs = 8000, check }) {
  const room = `${label}-${Math.random().toString(36).slice(2, 8)}`;
  const pages = [];
  for (let i = 0; i < n; i++) pages.push(await joinAs(context, base, `P${i + 1}`, room));
  try {
    for (const p of pages) {
      const deadline = Date.now() + 15000;
      while ((await decoding(p)) < n - 1) {
        if (Date.now() > deadline) throw new Error("the pages did not all decode each other before the signal");
        await p.waitForTimeout(100);
      }
    }
    const from = await roomSfu(pages[0]);
    const health = await (await fetch(`${base}/api/health`)).json();
    const port = Number(new URL(health.sfus.find((s) => s.id === from).url).port);
    const pid = sfuPid(port);
    if (!pid) throw new Error(`no process for SFU ${from} (port ${port})`);
    for (const p of pages) await p.evaluate(() => (window.edgemeetPc.__old = true));
    const sent = Date.now();
    process.kill(pid, signal);
    const back = [];
    for (const p of pages) {
      for (;;) {
        // A new PeerConnection decoding every remote video (on another SFU, or on this one if it
        // already came back: then the room set media up again on it).
        const fresh = await p.evaluate(() => !window.edgemeetPc.__old);
        if (fresh && (await decoding(p)) >= n - 1) break;
        if (Date.now() - sent > deadlineMs) {
          const text = await p.getByTestId("room-status").textContent();
          throw new Error(`a page still has no remote video ${Date.now() - sent} ms after ${signal}: ${text}`);
        }
        await p.waitForTimeout(50);
      }
      back.push(Date.now() - sent);
    }
    const result = { worst: Math.max(...back), back, from, to: await roomSfu(pages[0]) };
    if (check) await check(pages);
    return result;
  } finally {
    await Promise.all(pages.map((p) => p.close()));
  }
}
