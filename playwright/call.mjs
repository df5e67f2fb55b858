// Helpers shared by the failover tests and the failover bench: joining a room, counting decoding
// remote videos, finding an SFU's process.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";

/** A new page in `context` that joined `room` as `name`. */
export async function joinAs(context, base, name, room, { beforeJoin } = {}) {
  const page = await context.newPage();
  if (beforeJoin) await beforeJoin(page);
  // The page's warnings and errors (signaling failures land there), for failure messages.
  page.__console = [];
  page.__room = room; // for failure messages (`sfuReport`)
  page.__base = base;
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") page.__console.push(`${m.type()}: ${m.text()}`.slice(0, 300));
  });
  page.on("pageerror", (e) => page.__console.push(`pageerror: ${e}`.slice(0, 300)));
  await page.goto(`${base}/${room}`);
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Join" }).click();
  await page.getByRole("group", { name: `${name} (you)` }).waitFor({ timeout: 10000 });
  return page;
}

/** For `beforeJoin`: the room's messages reach this page `ms` late, in order (a slow link; what
 *  the page sends goes at once). Each frame handed to the page is kept (parsed) for `heardFromRoom`. */
export async function hearRoomLate(page, ms) {
  page.__heard = [];
  await page.routeWebSocket(/\/api\/rooms\/[^/]+\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => setTimeout(() => {
      ws.send(m);
      try { page.__heard.push(JSON.parse(m)); } catch { /* not JSON: not looked for */ }
    }, ms));
    ws.onClose((code, reason) => server.close({ code, reason }));
    server.onClose((code, reason) => setTimeout(() => ws.close({ code, reason }), ms));
  });
}

/** Waits until a page set up with `hearRoomLate` has been handed a room frame matching `pred`;
 *  fails after `timeout` ms saying `what` (or what it returns, then). Returns the frame. */
export async function heardFromRoom(page, pred, what, timeout = 5000) {
  const start = Date.now();
  while (Date.now() - start < timeout) {
    const f = page.__heard.find(pred);
    if (f) return f;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`${typeof what === "function" ? what() : what}: not within ${timeout} ms`);
}

/** Joins `room` as `name` as a browser of its own: its identity cookie (set at join) is put aside
 *  and the context's cookie jar emptied, so the next join gets a new identity. Returns the page
 *  and the cookies it joined with (to act as that browser again). */
export async function person(context, base, name, room) {
  const page = await joinAs(context, base, name, room);
  const cookies = await context.cookies();
  await context.clearCookies();
  return { page, cookies };
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

/** The SFU processes' pid by id, from `/api/health`. */
export async function sfuPidOf(base, id) {
  const health = await (await fetch(`${base}/api/health`)).json();
  const sfu = health.sfus.find((s) => s.id === id);
  if (!sfu) throw new Error(`the registry does not list SFU ${id}`);
  const port = Number(new URL(sfu.url).port);
  const pid = sfuPid(port);
  if (!pid) throw new Error(`no process for SFU ${id} (port ${port})`);
  return pid;
}

/** What a page's media connection looks like, for a failure message: its state and, per inbound
 *  track, packets, frames decoded, keyframes and size. */
export async function mediaReport(page) {
  // The page's side, bounded (a crashed or navigating page must not make the message fail or
  // hang); the SFU's side whatever happened to the page.
  const local = await Promise.race([
    page.evaluate(async () => {
      const pc = window.edgemeetPc;
      if (!pc) return "no PeerConnection";
      const tracks = [];
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp")
          tracks.push(`${s.kind} ${s.trackIdentifier?.slice(0, 8)}: ${s.packetsReceived} pkts, ${s.framesDecoded ?? "-"} frames, ${s.keyFramesDecoded ?? "-"} key, ${s.frameWidth ?? "-"}w, ${s.pliCount ?? "-"} PLI`);
      });
      return `${window.edgemeetPc.__old ? "old" : "new"} PC ${pc.connectionState}/${pc.signalingState}, ${pc.getTransceivers().length} transceivers; ${tracks.join("; ") || "no inbound RTP"}`;
    }),
    new Promise((resolve) => setTimeout(() => resolve("page: no stats within 5 s"), 5000).unref()),
  ]).catch((e) => `page: ${e.message}`);
  const sfu = page.__room && page.__base ? `; ${await sfuReport(page.__base, page.__room)}` : "";
  return `${local}; console: ${(page.__console ?? []).slice(-6).join(" | ") || "-"}${sfu}`;
}

/** What each SFU holds of `room` (its signed `GET /v1/rooms`): per member its session, the tiles
 *  its page said it shows, and per reception the layer wanted, forwarded and flowing, keyframes
 *  asked and packets sent; per published video the keyframes received and asked for. For failure
 *  messages: it says on which side a missing video stopped. */
export async function sfuReport(base, room) {
  const secret = process.env.EDGEMEET_CONTROL_SECRET;
  if (!secret) return "SFU state: EDGEMEET_CONTROL_SECRET not set";
  try {
    const health = await (await fetch(`${base}/api/health`, { signal: AbortSignal.timeout(3000) })).json();
    const out = [];
    for (const sfu of health.sfus ?? []) {
      const path = "/v1/rooms";
      const t = Date.now();
      const sig = createHmac("sha256", secret).update(`${t}\nGET\n${path}\n`).digest("hex");
      try {
        const r = await fetch(new URL(path, sfu.url), {
          headers: { "x-edgemeet-signature": `t=${t},v1=${sig}` },
          signal: AbortSignal.timeout(3000),
        });
        if (!r.ok) {
          out.push(`${sfu.id}: HTTP ${r.status} ${(await r.text()).slice(0, 200)}`);
          continue;
        }
        const rooms = await r.json();
        if (rooms[room]) out.push(`${sfu.id}: ${JSON.stringify(rooms[room]).slice(0, 20000)}`);
      } catch (e) {
        out.push(`${sfu.id}: ${e.message}`);
      }
    }
    return `SFU state of ${room}: ${out.join("; ") || "on no SFU"}`;
  } catch (e) {
    return `SFU state: ${e.message}`;
  }
}

/** Waits until every page decodes all `n - 1` remote videos on a PeerConnection made after the
 *  mark (`__old`); returns each page's time since `sent`. */
async function decodingAgain(pages, n, sent, deadlineMs, what) {
  const back = [];
  for (const p of pages) {
    for (;;) {
      // A new PeerConnection decoding every remote video (on another SFU, or on the same one if it
      // already came back: then the room set media up again on it).
      const fresh = await p.evaluate(() => !window.edgemeetPc.__old);
      if (fresh && (await decoding(p)) >= n - 1) break;
      if (Date.now() - sent > deadlineMs) {
        const text = await p.getByTestId("room-status").textContent();
        throw new Error(`a page still has no remote video ${Date.now() - sent} ms after ${what}: ${text}; ${await mediaReport(p)}`);
      }
      await p.waitForTimeout(50);
    }
    back.push(Date.now() - sent);
  }
  return back;
}

/** `n` pages (P1…Pn) in a fresh room decode each other; then each signal in `signals` goes in turn
 *  to the room's SFU of the moment, the next one as soon as every page decodes again (so a second
 *  signal lands right after the room moved). Resolves with one result per signal: the slowest page's
 *  time (ms) until it decodes all remote videos again on a new PeerConnection, each page's time,
 *  and the SFU before and after. `deadlineMs` bounds each wait; `check(pages)` runs before the
 *  pages close. `signal` is shorthand for one signal (the result is then that one result). */
export async function moveAfter({ context, base, signal, signals, label, n = 3, deadlineMs = 8000, check }) {
  const list = signals ?? [signal];
  const room = `${label}-${Math.random().toString(36).slice(2, 8)}`;
  const pages = [];
  for (let i = 0; i < n; i++) pages.push(await joinAs(context, base, `P${i + 1}`, room));
  try {
    for (const p of pages) {
      const deadline = Date.now() + 15000;
      while ((await decoding(p)) < n - 1) {
        if (Date.now() > deadline) throw new Error(`the pages did not all decode each other before the signal: ${await mediaReport(p)}`);
        await p.waitForTimeout(100);
      }
    }
    const results = [];
    for (const sig of list) {
      const from = await roomSfu(pages[0]);
      const pid = await sfuPidOf(base, from);
      for (const p of pages) await p.evaluate(() => (window.edgemeetPc.__old = true));
      const sent = Date.now();
      process.kill(pid, sig);
      const back = await decodingAgain(pages, n, sent, deadlineMs, `${sig} to ${from}`);
      results.push({ signal: sig, worst: Math.max(...back), back, from, to: await roomSfu(pages[0]), pid });
    }
    if (check) await check(pages);
    return signals ? results : results[0];
  } finally {
    await Promise.all(pages.map((p) => p.close()));
  }
}

/** A participant's tile on `page`, by its accessible name. */
export const tile = (page, name) => page.getByRole("group", { name, exact: true });
/** A participant's id, from their tile on `page`. */
export const idOf = (page, name) => tile(page, name).getAttribute("data-participant");

/** Inbound RTP per publisher and kind: { "<id>-video": {framesDecoded, frameWidth, packetsReceived, bytesReceived, timestamp}, … } */
export async function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.edgemeetPc;
    if (!pc) return {};
    const out = {};
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.trackIdentifier) {
        out[s.trackIdentifier] = {
          kind: s.kind,
          framesDecoded: s.framesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          packetsReceived: s.packetsReceived ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
          timestamp: s.timestamp,
        };
      }
    });
    return out;
  });
}

/** Polls `page`'s stats until `ok(stats)` holds; fails with the last stats (and the page's last
 * console errors and warnings: a refused SFU offer or answer shows only there) after `timeout` ms. */
export async function until(page, what, ok, timeout = 10000) {
  const start = Date.now();
  let last;
  while (Date.now() - start < timeout) {
    last = await inbound(page);
    if (ok(last)) return last;
    await page.waitForTimeout(100);
  }
  const logged = (page.__console ?? []).slice(-8).join(" | ") || "-";
  assert.fail(`${what}: not reached in ${timeout} ms; stats: ${JSON.stringify(last)}; connection: ${await pcState(page)}; console: ${logged}`);
}

/** The page's PeerConnection in one line, for a failure message: signaling and connection
 *  state, how many m-lines the applied descriptions hold, and each transceiver's mid, direction
 *  and kind — whether an SFU offer that should have added a track was applied at all. */
async function pcState(page) {
  try {
    return await page.evaluate(() => {
      const pc = window.edgemeetPc;
      if (!pc) return "no PeerConnection";
      const mLines = (d) => (d?.sdp.match(/\r\nm=/g) ?? []).length;
      const ts = pc.getTransceivers().map((t) => `${t.mid ?? "-"}:${t.currentDirection ?? t.direction}:${t.receiver.track?.kind ?? "?"}`);
      return `${pc.signalingState}/${pc.connectionState}, m-lines local ${mLines(pc.currentLocalDescription)} remote ${mLines(pc.currentRemoteDescription)}, transceivers ${ts.join(" ")}`;
    });
  } catch (e) {
    return `unknown (${e})`;
  }
}

/** Packets per second of one inbound stream, measured over about `ms`. */
export async function packetRate(page, key, ms = 2000) {
  const a = (await inbound(page))[key];
  await page.waitForTimeout(ms);
  const b = (await inbound(page))[key];
  assert.ok(a && b, `no inbound stream ${key}`);
  return ((b.packetsReceived - a.packetsReceived) * 1000) / (b.timestamp - a.timestamp);
}

/** Presses the control `name` of the call's bar: directly when it is in the bar, else under
 *  "More" (the bar keeps the less used controls there, and on a phone all but a few). */
export async function press(page, name) {
  const inBar = page.locator("nav.controls").getByRole("button", { name, exact: true }).filter({ visible: true });
  if ((await inBar.count()) > 0 && !(await inBar.first().evaluate((b) => !!b.closest("#more-actions")))) return inBar.first().click();
  await page.getByRole("button", { name: "More" }).click();
  await page.locator("#more-actions").getByRole("button", { name, exact: true }).click();
}

/** The SFU's address and port for this page's media (the selected candidate pair's remote end). */
export async function sfuMediaAddr(page) {
  return page.evaluate(async () => {
    const stats = await window.edgemeetPc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => s.type === "candidate-pair" && s.state === "succeeded" && s.nominated && (pair = s));
    const remote = pair && stats.get(pair.remoteCandidateId);
    return remote ? { address: remote.address, port: remote.port } : null;
  });
}

/** Resolves once every dev SFU is live and not draining again (the stack restarts stopped ones). */
export async function allLive(base) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const h = await (await fetch(`${base}/api/health`)).json();
    if (h.live_sfus === 3 && h.sfus.every((s) => s.healthy && !s.draining)) return;
    assert.ok(Date.now() < deadline, `SFUs not all back: ${JSON.stringify(h.sfus.map((s) => [s.id, s.healthy, s.draining]))}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Resolves when process `pid` has exited (the restart loop starts a new one with another pid). */
export async function exited(pid, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    assert.ok(Date.now() < deadline, `process ${pid} still runs ${ms} ms later`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Ticks a setting in the meeting settings panel (hosts and co-hosts). */
export async function setting(page, label, on = true) {
  await press(page, "Meeting settings");
  const box = page.locator("aside.panel").getByLabel(label);
  if ((await box.isChecked()) !== on) await box.click();
  await page.waitForFunction(([l, v]) => [...document.querySelectorAll("aside.panel label.check")]
    .find((x) => x.textContent.includes(l))?.querySelector("input").checked === v, [label, on], { timeout: 3000 });
  await page.locator("aside.panel").getByRole("button", { name: "Close meeting settings" }).click();
}

/** Makes `who`'s browser identity (the cookies `person` returned) the one `context`'s requests carry. */
export async function actAs(context, who) {
  await context.clearCookies();
  await context.addCookies(who.cookies);
}

/** The room page's "Recording" badge. */
export const recordingIndicator = (page) => page.locator("header.room-bar").getByRole("status").filter({ hasText: "Recording" });

/** The manifest of `room`'s recording as the browser with `who.cookies` reads it (or null). */
export async function manifestFor(base, who, room) {
  const cookie = who.cookies.map((c) => `${c.name}=${c.value}`).join("; ");
  const get = async (path) => (await fetch(`${base}${path}`, { headers: { cookie } })).json();
  const r = (await get("/api/recordings")).recordings.find((x) => x.room === room);
  return r ? get(`/api/recordings/${r.id}`) : null;
}

/** Capture → shown (ms) of each remote video's last frame on `page`, by publisher id, computed
 *  here from getSynchronizationSources() (Unix ms when delivered, NTP ms when captured). */
export async function latencies(page) {
  return page.evaluate(() => {
    const out = {};
    for (const r of window.edgemeetPc?.getReceivers() ?? []) {
      if (r.track?.kind !== "video") continue;
      const s = r.getSynchronizationSources()[0];
      if (!s || s.captureTimestamp === undefined) continue;
      const who = [...document.querySelectorAll("video[data-publisher]")]
        .find((v) => v.srcObject?.getVideoTracks?.().some((t) => t.id === r.track.id))?.dataset.publisher;
      if (!who) continue;
      out[who] = { at: s.timestamp, ms: s.timestamp + 2208988800000 - s.captureTimestamp - (s.senderCaptureTimeOffset ?? 0) };
    }
    return out;
  });
}
