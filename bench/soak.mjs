// Soak: a long call with churn against a running stack (EDGEMEET_URL). Six participants in one room;
// every 20 s the one who has been there longest leaves and a new one joins; halfway, the room's SFU
// is killed (kill -9; the stack brings it back 3 s later). Every half second each page's remote
// videos are sampled (frames decoded), so the longest freeze any page saw is measured — apart from
// the failover, which is reported on its own. SFU and workerd (the edge with its Durable Objects)
// memory is read from /proc at the start and the end. Prints figures; not pass/fail.
// Run by `cargo xtask soak [--minutes N]` (default 30; EDGEMEET_SOAK_MINUTES).
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_ARGS, devAddr } from "../playwright/browser.mjs";
import { joinAs, sfuPid, roomSfu } from "../playwright/call.mjs";

const BASE = process.env.EDGEMEET_URL;
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask soak`)");
const MINUTES = Number(process.env.EDGEMEET_SOAK_MINUTES || 30);
const PEOPLE = 6;
const CHURN_MS = 20_000;
const SAMPLE_MS = 500;

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "edgemeet-soak-")), {
  executablePath: process.env.EDGEMEET_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: CHROMIUM_ARGS,
  permissions: ["camera", "microphone"],
  // Small windows: six cameras in a grid want the smallest layer (this machine has two cores).
  viewport: { width: 640, height: 400 },
  extraHTTPHeaders: { "x-edgemeet-dev-addr": devAddr() },
});

/** Resident memory (MiB) of a process, from /proc. */
function rssMiB(pid) {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) / 1024 : null;
  } catch {
    return null;
  }
}

/** Pids of processes whose command line's first word ends with `name`. */
function pidsOf(name) {
  const out = [];
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (argv[0].endsWith(name)) out.push(Number(pid));
    } catch {}
  }
  return out;
}

async function sfus() {
  const h = await (await fetch(`${BASE}/api/health`)).json();
  return h.sfus.map((s) => ({ id: s.id, pid: sfuPid(Number(new URL(s.url).port)) }));
}

async function memory() {
  const list = await sfus();
  const sfu = Object.fromEntries(list.map((s) => [s.id, rssMiB(s.pid)]));
  const workerd = pidsOf("workerd").reduce((a, p) => a + (rssMiB(p) ?? 0), 0);
  // Our Rust state in the edge isolate (worker and Durable Objects): its WebAssembly memory, a
  // high-water mark. workerd's own RSS also holds the local runtime's per-request and per-object
  // costs (measured by hand: ~0.25 MiB a join and ~0.4 MiB a room that stay in workerd's native
  // memory, with the V8 heap and this flat).
  const wasm = ((await (await fetch(`${BASE}/api/health`)).json()).wasm_memory_bytes ?? 0) / 1048576;
  return { sfu, workerd, wasm, sfuPids: Object.fromEntries(list.map((s) => [s.id, s.pid])) };
}

const room = `soak-${Math.random().toString(36).slice(2, 8)}`;
const pages = []; // { page, name, joinedAt, frames: {track: [count, lastProgressAt]} }
let serial = 0;
const failures = [];
let longestFreeze = { ms: 0, who: "", when: 0 };
let killWindow = null; // [from, to] ms: freezes in it belong to the failover
const start = Date.now();

async function join1() {
  const name = `P${++serial}`;
  try {
    const page = await joinAs(context, BASE, name, room);
    pages.push({ page, name, joinedAt: Date.now(), frames: {} });
  } catch (e) {
    failures.push(`${name} could not join: ${String(e).slice(0, 200)}`);
  }
}

/** Frames decoded per remote video track on one page (empty while it has no connection). */
async function framesOf(page) {
  return page
    .evaluate(async () => {
      const pc = window.edgemeetPc;
      const out = {};
      if (!pc) return out;
      // Only tiles on screen: a hidden one (another page of the grid, a full strip on this small
      // window) is not forwarded, and its pause is nobody's freeze.
      // Track id → whose tile shows it (named in the freeze figure).
      const shown = new Map();
      for (const v of document.querySelectorAll("video")) {
        const t = v.srcObject?.getVideoTracks?.()[0];
        if (t && v.getClientRects().length > 0 && !v.closest("[hidden]")) {
          shown.set(t.id, `${v.closest("[role=group]")?.getAttribute("aria-label") ?? "?"}'s ${v.dataset.source ?? "video"}`);
        }
      }
      (await pc.getStats()).forEach((s) => {
        if (!shown.has(s.trackIdentifier)) return;
        // Per stream (SSRC): a receiver the SFU hands to the next joiner after someone leaves keeps
        // its track but gets a new stream, and the pause between the two is nobody's freeze.
        if (s.type === "inbound-rtp" && s.kind === "video" && s.trackIdentifier)
          out[`${shown.get(s.trackIdentifier)} (ssrc ${s.ssrc})`] = [s.framesDecoded ?? 0, s.packetsReceived ?? 0];
      });
      return out;
    })
    .catch(() => ({}));
}

/** Samples every page's remote videos; records the longest time any decoding track went without
 *  a new frame (a track counts once it decoded a frame; tracks that go away stop counting). */
let lastSample = null;
async function sample() {
  const now = Date.now();
  // The sampler itself was held up (a busy machine): a gap it did not watch is no measured freeze.
  const blind = lastSample !== null && now - lastSample > 4 * SAMPLE_MS;
  lastSample = now;
  for (const p of pages) {
    const now_ = await framesOf(p.page);
    for (const [track, [frames, packets]] of Object.entries(now_)) {
      const seen = p.frames[track];
      if (!seen) {
        if (frames > 0) p.frames[track] = [frames, now, packets];
        continue;
      }
      if (frames > seen[0]) {
        const gap = now - seen[1];
        const inKill = killWindow && seen[1] >= killWindow[0] - SAMPLE_MS && seen[1] <= killWindow[1];
        if (!inKill && !blind && gap > longestFreeze.ms)
          longestFreeze = {
            ms: gap,
            who: `${p.name} watching ${track}`,
            when: Math.round((now - start) / 1000),
            from: new Date(seen[1]).toISOString(),
            // Packets that arrived meanwhile: none means nothing reached the page.
            packets: packets - seen[2],
          };
        p.frames[track] = [frames, now, packets];
      }
    }
    for (const track of Object.keys(p.frames)) if (!(track in now_)) delete p.frames[track];
  }
}

for (let i = 0; i < PEOPLE; i++) await join1();
await new Promise((r) => setTimeout(r, 10_000));
const memStart = await memory();
console.log(`soak: ${MINUTES} min, ${PEOPLE} participants in ${room}, one leaves and one joins every ${CHURN_MS / 1000} s`);
console.log(`start: SFU RSS ${JSON.stringify(memStart.sfu)} MiB; workerd ${memStart.workerd.toFixed(1)} MiB`);

const end = start + MINUTES * 60_000;
let nextChurn = Date.now() + CHURN_MS;
let killed = false;
let failover = null;
let churns = 0;
let joining = null;
while (Date.now() < end) {
  await sample();
  if (Date.now() >= nextChurn) {
    nextChurn += CHURN_MS;
    const oldest = pages.shift();
    // Not awaited: the page is out of the sample already, and the sampler must not wait on it.
    oldest?.page.close().catch(() => {});
    // Joined in the background: a join takes seconds (a new page, pre-join, media), and sampling
    // must not stop meanwhile — a blind gap would read as everyone's freeze.
    joining = (joining ?? Promise.resolve()).then(join1);
    churns++;
  }
  if (!killed && Date.now() >= start + (end - start) / 2 && pages.length > 1) {
    killed = true;
    // Every page settled in the call first: one still joining has nothing to recover.
    await joining;
    const watched = [...pages];
    const from = await roomSfu(watched[0].page).catch(() => null);
    const pid = (await sfus()).find((s) => s.id === from)?.pid;
    if (!pid) failures.push(`no SFU to kill at halftime (the room's SFU read as ${from})`);
    if (pid) {
      // What each page had decoded before (buffered frames still come out just after a kill).
      const base = await Promise.all(watched.map((p) => framesOf(p.page)));
      const t = Date.now();
      killWindow = [t, t + 30_000];
      process.kill(pid, "SIGKILL");
      // Recovery: every page has decoded 10 frames more of some video than before the kill (a
      // new connection's tracks, or an old one moving again).
      let back = null;
      while (Date.now() - t < 30_000) {
        const now_ = await Promise.all(watched.map((p) => framesOf(p.page)));
        if (now_.every((m, i) => Object.entries(m).some(([k, [f]]) => f >= (base[i][k]?.[0] ?? 0) + 10))) {
          back = Date.now() - t;
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const p of pages) p.frames = {};
      killWindow = [t, Date.now()];
      failover = { from, to: await roomSfu(pages[0].page).catch(() => null), ms: back, at: Date.now(), mem: await memory() };
      if (back === null) failures.push(`after kill -9 of ${from} not every page decoded again within 30 s`);
      // The kill held the loop up: churn resumes at its pace, not in a burst.
      nextChurn = Date.now() + CHURN_MS;
    }
  }
  await new Promise((r) => setTimeout(r, SAMPLE_MS));
}
await joining;
const memEnd = await memory();
const endSfu = pages.length ? await roomSfu(pages[0].page).catch(() => null) : null;
for (const p of pages) {
  const err = await p.page.evaluate(() => document.querySelector('[role="alert"]')?.textContent ?? "").catch(() => "");
  if (err) failures.push(`${p.name}: "${err.slice(0, 120)}"`);
}
await context.close();

console.log(`end:   SFU RSS ${JSON.stringify(memEnd.sfu)} MiB; workerd ${memEnd.workerd.toFixed(1)} MiB`);
for (const id of Object.keys(memStart.sfu)) {
  const same = memStart.sfuPids[id] === memEnd.sfuPids[id];
  const a = memStart.sfu[id];
  const b = memEnd.sfu[id];
  console.log(
    `figure: SFU ${id} RSS ${a?.toFixed(1)} → ${b?.toFixed(1)} MiB` +
      (!same
        ? " (restarted: killed at halftime)"
        : id === endSfu && failover && failover.to === id
          ? ` (took the room over at halftime; from then to the end, with the same number of people: ` +
            `${failover.mem.sfu[id]?.toFixed(1)} → ${b?.toFixed(1)} MiB over ${((Date.now() - failover.at) / 60_000).toFixed(1)} min)`
          : ` (drift ${(b - a).toFixed(1)} MiB over ${MINUTES} min)`),
  );
}
console.log(
  `figure: edge + Durable Objects: our WebAssembly memory ${memStart.wasm.toFixed(1)} → ${memEnd.wasm.toFixed(1)} MiB; ` +
    `workerd RSS ${memStart.workerd.toFixed(1)} → ${memEnd.workerd.toFixed(1)} MiB (the local runtime's own growth included)`,
);
console.log(`figure: ${churns} leaves + joins; ${serial} joins in all; failures: ${failures.length}`);
for (const f of failures) console.log(`  failure: ${f}`);
console.log(
  `figure: longest freeze any page saw outside the failover: ${longestFreeze.ms} ms (${longestFreeze.who}, at ${longestFreeze.when} s, from ${longestFreeze.from}; ${longestFreeze.packets} packets of it arrived meanwhile)`,
);
if (failover) console.log(`figure: kill -9 of ${failover.from} at halftime: every page decoding again after ${failover.ms} ms (on ${failover.to})`);
