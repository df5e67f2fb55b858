// Recording end to end, in real Chromium against the real stack (the SFU records, workerd's local
// D1 and R2 keep it): a host records two people for 10 s, both see the indicator and the notices,
// the recording appears on the host's recordings page, the player plays every camera and
// microphone in sync and seeks, files come in byte ranges, and another browser gets 403; people a
// scheduled meeting invites may watch its recording, not delete it; a recording is of the main
// room (not of breakout rooms). (A kill -9 and a drain mid-recording: recording-failover.test.mjs.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { browserForFile, BASE, ARTIFACTS } from "./browser.mjs";
import { person as personIn, press, decoding, setting, recordingIndicator, manifestFor as manifestIn, actAs } from "./call.mjs";

const browser = browserForFile();

/** Joins as `name` as a browser of its own (one vote, one recording's access, is per browser). */
const person = (name, room) => personIn(browser.context, BASE, name, room);

/** Makes `who`'s browser identity the one the context's requests carry. */
const as = (who) => actAs(browser.context, who);

/** Bytes of recordings the SFUs uploaded and the milliseconds it took, summed over the SFUs. */
async function uploaded() {
  let bytes = 0, ms = 0;
  for (const sfu of (await (await fetch(`${BASE}/api/health`)).json()).sfus) {
    const text = await fetch(new URL("/metrics", sfu.url)).then((r) => r.text()).catch(() => "");
    bytes += Number(/^edgemeet_sfu_record_uploaded_bytes_total (\d+)/m.exec(text)?.[1] ?? 0);
    ms += Number(/^edgemeet_sfu_record_upload_milliseconds_total (\d+)/m.exec(text)?.[1] ?? 0);
  }
  return { bytes, ms };
}

const indicator = recordingIndicator;

const manifestFor = (who, room) => manifestIn(BASE, who, room);

test("a host records two people for 10 s; the player plays it back in sync and seeks; another browser gets 403", async () => {
  const room = `rec-${Math.random().toString(36).slice(2, 8)}`;
  const hana = await person("Hana", room);
  const gus = await person("Gus", room);

  // Only the host and co-hosts are offered Record.
  await gus.page.getByRole("button", { name: "More" }).click();
  await gus.page.locator("#more-actions").getByRole("button", { name: "Stats" }).waitFor();
  assert.equal(await gus.page.locator("#more-actions").getByRole("button", { name: "Record", exact: true }).count(), 0, "no Record for a participant");
  await gus.page.getByRole("button", { name: "More" }).click();
  // Made a co-host, Gus is offered Record — until Hana, the host, says co-hosts may not record.
  const gusRecord = gus.page.locator("#more-actions").getByRole("button", { name: "Record", exact: true });
  await press(hana.page, "Participants");
  await hana.page.getByRole("button", { name: "Make Gus a co-host" }).click();
  await hana.page.getByRole("button", { name: "Remove co-host role from Gus" }).waitFor();
  await gus.page.getByRole("button", { name: "More" }).click();
  await gusRecord.waitFor({ timeout: 5000 });
  await gus.page.getByRole("button", { name: "More" }).click();
  await setting(hana.page, "Co-hosts may start and stop a recording", false);
  await gus.page.getByRole("button", { name: "More" }).click();
  await gus.page.locator("#more-actions").getByRole("button", { name: "Stats" }).waitFor();
  await gusRecord.waitFor({ state: "hidden", timeout: 5000 });
  assert.equal(await gusRecord.isVisible(), false, "no Record for a co-host the host said no to");
  await gus.page.getByRole("button", { name: "More" }).click();
  // The recording lasts from this press to the press of Stop below: ten seconds of checks plus
  // whatever the steps between take on this machine.
  const pressedRecord = Date.now();
  await press(hana.page, "Record");
  for (const p of [hana.page, gus.page]) {
    await indicator(p).waitFor({ timeout: 10000 });
    await p.getByTestId("toasts").getByText("Hana started recording").waitFor({ timeout: 5000 });
  }
  // Someone about to join is told before they do.
  const late = await browser.context.newPage();
  await late.goto(`${BASE}/${room}`);
  await late.getByTestId("recording-notice").getByText("This meeting is being recorded.", { exact: false }).waitFor({ timeout: 5000 });
  await late.close();
  // Ten seconds of the call, both decoding each other the whole time.
  const started = Date.now();
  let checks = 0;
  while (Date.now() - started < 10_000) {
    for (const p of [hana.page, gus.page]) assert.equal(await decoding(p), 1, "each decodes the other while recording");
    checks++;
    await hana.page.waitForTimeout(1000); // the interval between checks
  }
  assert.ok(checks >= 8);
  await hana.page.screenshot({ path: join(ARTIFACTS, "recording-room-1280.png") });
  const before = await uploaded();
  await press(hana.page, "Stop recording");
  const stopped = Date.now();
  for (const p of [hana.page, gus.page]) await indicator(p).waitFor({ state: "hidden", timeout: 10000 });
  const after = await browser.context.newPage();
  const asked = after.waitForResponse((r) => r.url().endsWith(`/api/rooms/${room}/status`));
  await after.goto(`${BASE}/${room}`);
  assert.deepEqual(await (await asked).json(), { recording: false });
  await after.getByRole("button", { name: "Join" }).waitFor();
  assert.equal(await after.getByTestId("recording-notice").isVisible(), false, "not recording any more");
  await after.close();
  // The notices are in the chat.
  // (The bar's button counts the notices: "Chat (2 new)".)
  await gus.page.locator("nav.controls").getByRole("button", { name: /^Chat \(2 new\)$/ }).click();
  await gus.page.getByRole("log", { name: "Messages" }).getByText("Hana stopped the recording.").waitFor({ timeout: 5000 });

  // Hana's recordings page lists it once the SFU has uploaded it: about ten seconds long.
  await as(hana);
  const list = await browser.context.newPage();
  await list.goto(`${BASE}/recordings`);
  const item = list.getByRole("listitem", { name: new RegExp(`^${room} on `) });
  let playable;
  for (let tries = 0; ; tries++) {
    const text = (await item.textContent({ timeout: 1000 }).catch(() => "")) ?? "";
    const m = /(\d+):(\d\d) ·/.exec(text);
    if (m && Number(m[1]) * 60 + Number(m[2]) >= 9 && !/recording now/.test(text)) break;
    assert.ok(tries < 40, `the recording never appeared whole: ${await list.locator("main").textContent()}`);
    await list.waitForTimeout(500); // a poll interval, at most 40 looks
    await list.reload();
  }
  playable = Date.now() - stopped;
  console.log(`# stop -> listed and playable: ${playable} ms`);
  const up = await uploaded();
  const [bytes, ms] = [up.bytes - before.bytes, up.ms - before.ms];
  assert.ok(bytes > 500_000, `the SFU uploaded ${bytes} bytes`);
  console.log(`# upload to the edge's R2: ${(bytes / 1e6).toFixed(2)} MB in ${ms} ms, ${(bytes / 1e3 / Math.max(ms, 1)).toFixed(1)} MB/s`);
  const m = /(\d+):(\d\d) ·/.exec(await item.textContent());
  const listed = Number(m[1]) * 60 + Number(m[2]);
  // As long as it was recorded (whole seconds, shown rounded down): from the press of Record to
  // the press of Stop, less at most the wait for the first keyframe and the calls' way to the SFU.
  const window = (stopped - pressedRecord) / 1000;
  console.log(`# recorded ${window.toFixed(1)} s between the presses, listed as ${listed} s`);
  assert.ok(listed >= 9 && listed <= Math.ceil(window) && listed >= window - 3, `listed as ${listed} s for ${window.toFixed(1)} s between the presses`);

  await item.getByRole("button", { name: "Play" }).click();
  const player = list.getByRole("region", { name: /^Playing: / });
  await player.waitFor();
  const videos = player.locator("video");
  const audios = player.locator("audio");
  assert.equal(await videos.count(), 2, "both cameras");
  assert.equal(await audios.count(), 2, "both microphones");
  assert.deepEqual(
    (await player.locator("video, audio").evaluateAll((els) => els.map((e) => e.getAttribute("aria-label")))).sort(),
    ["Gus (audio)", "Gus (video)", "Hana (audio)", "Hana (video)"],
  );
  await player.getByRole("button", { name: "Play", exact: true }).click();
  // Where each element is on the recording's time line: its file's position plus the file's
  // offset (when its first frame came), from the manifest the page plays.
  const timeline = () =>
    list.evaluate(async () => {
      const id = (await (await fetch("/api/recordings")).json()).recordings[0].id;
      const man = await (await fetch(`/api/recordings/${id}`)).json();
      const offset = {};
      for (const s of man.segments)
        for (const t of s.tracks) offset[`/api/recordings/${id}/${s.segment}/${t.file}`] = (t.start_us - man.start_us) / 1e6;
      return [...document.querySelectorAll(".player [data-track]")].map((e) => ({
        at: e.currentTime + offset[e.getAttribute("data-track")],
        t: e.currentTime,
        ready: e.readyState,
        video: e.tagName === "VIDEO",
        frames: e.tagName === "VIDEO" ? e.getVideoPlaybackQuality().totalVideoFrames : null,
        w: e.videoWidth ?? null,
      }));
    });
  const state = async () => (await timeline()).filter((e) => e.video);
  await list.waitForFunction(() => [...document.querySelectorAll(".player video")].every((v) => v.currentTime > 1.5 && v.getVideoPlaybackQuality().totalVideoFrames > 20), null, { timeout: 15000 });
  const a = await state();
  for (const v of a) assert.ok(v.w > 0, `a picture: ${JSON.stringify(a)}`);
  // In sync: every camera and microphone at the same point of the recording (within 0.35 s).
  const all = await timeline();
  const ats = all.map((e) => e.at);
  assert.ok(Math.max(...ats) - Math.min(...ats) < 0.35, `in sync: ${JSON.stringify(all)}`);
  await list.screenshot({ path: join(ARTIFACTS, "recording-player-1280.png"), fullPage: true });

  // Seek to 5 s: every file follows at once (the edge serves byte ranges from R2).
  await player.getByRole("button", { name: "Pause" }).click();
  await player.getByRole("slider", { name: "Position" }).fill("5");
  await player.getByTestId("player-time").getByText(/^0:05 \//).waitFor({ timeout: 5000 });
  for (let tries = 0; ; tries++) {
    const t = await timeline();
    if (t.every((e) => Math.abs(e.at - 5) < 0.35 && e.ready >= 2)) break;
    assert.ok(tries < 50, `every file at 5 s: ${JSON.stringify(t)}`);
    await list.waitForTimeout(100); // a poll interval, at most 50 looks
  }
  await player.getByRole("button", { name: "Play", exact: true }).click();
  await list.waitForFunction(() => [...document.querySelectorAll(".player video")].every((v) => v.currentTime > 5.8), null, { timeout: 10000 });

  // A byte range comes back as 206; the manifest names the files.
  const id = await list.evaluate(async () => (await (await fetch("/api/recordings")).json()).recordings[0].id);
  const file = await list.evaluate(async (id) => {
    const seg = (await (await fetch(`/api/recordings/${id}`)).json()).segments[0];
    return `/api/recordings/${id}/${seg.segment}/${seg.tracks[0].file}`;
  }, id);
  const probe = await list.evaluate(async (id) => {
    const man = await (await fetch(`/api/recordings/${id}`)).json();
    const seg = man.segments[0];
    const r = await fetch(`/api/recordings/${id}/${seg.segment}/${seg.tracks[0].file}`, { headers: { Range: "bytes=0-99" } });
    const body = await r.arrayBuffer();
    return { status: r.status, range: r.headers.get("content-range"), len: body.byteLength, files: man.segments.flatMap((s) => s.tracks).length };
  }, id);
  assert.equal(probe.status, 206);
  assert.match(probe.range, /^bytes 0-99\/\d+$/);
  assert.equal(probe.len, 100);
  assert.equal(probe.files, 4);
  // Each person's microphone and camera are placed by their browser's RTCP sender reports (when
  // each was captured: lip sync), not by when its first frame reached the SFU (a camera's comes
  // later: it is encoded first).
  const clocks = await list.evaluate(async (id) => (await (await fetch(`/api/recordings/${id}`)).json()).segments
    .flatMap((s) => s.tracks).map((t) => ({ who: t.participant, kind: t.kind, clock: t.clock, start: t.start_us, arrived: t.arrived_us, bySenderReports: t.sender_start_us ?? null })), id);
  assert.deepEqual(clocks.map((t) => t.clock), ["sender-reports", "sender-reports", "sender-reports", "sender-reports"], JSON.stringify(clocks));
  for (const who of new Set(clocks.map((t) => t.who))) {
    const [a, v] = ["audio", "video"].map((k) => clocks.find((t) => t.who === who && t.kind === k));
    console.log(`# camera − microphone start: ${((v.start - a.start) / 1000).toFixed(1)} ms by sender reports, ${((v.arrived - a.arrived) / 1000).toFixed(1)} ms by arrival`);
  }
  await list.setViewportSize({ width: 390, height: 844 });
  await list.screenshot({ path: join(ARTIFACTS, "recording-player-390.png"), fullPage: true });
  const wide = await list.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(wide <= 0, `the player fits a phone (${wide} px too wide)`);

  // Gus's browser may not watch it: the manifest and the files are refused, and his list is empty.
  await as(gus);
  const other = await browser.context.newPage();
  await other.goto(`${BASE}/recordings`);
  const refused = await other.evaluate(async ([id, file]) => {
    const man = await fetch(`/api/recordings/${id}`);
    const one = await fetch(file, { headers: { Range: "bytes=0-99" } });
    const list = await (await fetch("/api/recordings")).json();
    return { man: man.status, file: one.status, listed: list.recordings.length };
  }, [id, file]);
  assert.deepEqual(refused, { man: 403, file: 403, listed: 0 });

  // Hana deletes it: gone from the list and from R2.
  await as(hana);
  await list.setViewportSize({ width: 1280, height: 800 });
  list.once("dialog", (d) => d.accept());
  await item.getByRole("button", { name: "Delete recording" }).click();
  await item.waitFor({ state: "detached", timeout: 5000 });
  const gone = await list.evaluate(async (id) => (await fetch(`/api/recordings/${id}`)).status, id);
  assert.equal(gone, 404);
  for (const p of [hana.page, gus.page, list, other]) await p.close();
});

test("people a scheduled meeting invites, signed in, may watch its recording but not delete it; its owner may", async () => {
  await browser.context.clearCookies();
  const tag = Math.random().toString(36).slice(2, 10);
  const [olgaEmail, ivanEmail] = [`olga-${tag}@example.org`, `ivan-${tag}@example.org`];
  const desk = await browser.context.newPage();
  await desk.goto(`${BASE}/recordings`);
  const api = (path, method = "GET", body = null) =>
    desk.evaluate(async ([path, method, body]) => {
      const r = await fetch(path, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
      const text = await r.text();
      return { status: r.status, json: text.startsWith("{") ? JSON.parse(text) : text };
    }, [path, method, body]);
  const register = async (email, name) =>
    assert.equal((await api("/api/account/register", "POST", { email, name, password: "a long enough password" })).status, 201);
  // Olga schedules a meeting (tomorrow) naming Ivan, and holds it now: she records it.
  await register(olgaEmail, "Olga Owner");
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  const made = await api("/api/meetings", "POST", {
    title: "Review", start: `${tomorrow}T10:00`, time_zone: "UTC", duration_minutes: 30, cohosts: [ivanEmail],
  });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  const room = made.json.room;
  const olga = await person("Olga", room);
  await press(olga.page, "Record");
  await indicator(olga.page).waitFor({ timeout: 10000 });
  await olga.page.waitForTimeout(3000); // what is recorded: three seconds of Olga's call
  await press(olga.page, "Stop recording");
  await indicator(olga.page).waitFor({ state: "hidden", timeout: 10000 });

  // Ivan signs up with the address the meeting names, in a browser of his own: it is listed for
  // him as shared, he may play and download it, and not delete it.
  await browser.context.clearCookies();
  await desk.reload();
  await register(ivanEmail, "Ivan Invited");
  let mine;
  for (let tries = 0; ; tries++) {
    mine = (await api("/api/recordings")).json.recordings?.find((r) => r.room === room);
    if (mine?.ended_at && mine.duration_ms > 0) break;
    assert.ok(tries < 40, `listed for the invited: ${JSON.stringify(mine)}`);
    await desk.waitForTimeout(500); // a poll interval, at most 40 looks
  }
  assert.equal(mine.can_delete, false);
  const man = await api(`/api/recordings/${mine.id}`);
  assert.equal(man.status, 200);
  const file = `/api/recordings/${mine.id}/${man.json.segments[0].segment}/${man.json.segments[0].tracks[0].file}`;
  assert.equal((await api(file)).status, 200);
  const refused = await api(`/api/recordings/${mine.id}`, "DELETE");
  assert.equal(refused.status, 403);
  assert.match(refused.json.message, /may delete it/);
  await desk.goto(`${BASE}/recordings`);
  const item = desk.getByRole("listitem", { name: new RegExp(`^${room} on `) });
  await item.getByText("shared with you", { exact: false }).waitFor({ timeout: 5000 });
  assert.equal(await item.getByRole("button", { name: "Play" }).count(), 1);
  assert.equal(await item.getByRole("button", { name: "Delete recording" }).count(), 0, "no Delete for the invited");
  // Signed out, his browser may not watch it.
  assert.equal((await api("/api/account/signout", "POST")).status, 204);
  assert.equal((await api(`/api/recordings/${mine.id}`)).status, 403);

  // Olga, signed in (in another browser than the one that started it), may delete it.
  await browser.context.clearCookies();
  await desk.reload();
  assert.equal((await api("/api/account/signin", "POST", { email: olgaEmail, password: "a long enough password" })).status, 200);
  const hers = (await api("/api/recordings")).json.recordings.find((r) => r.room === room);
  assert.equal(hers.can_delete, true);
  assert.equal((await api(`/api/recordings/${mine.id}`, "DELETE")).status, 204);
  for (const p of [olga.page, desk]) await p.close();
});

test("a recording is of the main room: someone in a breakout room is not recorded there, and their badge says so", async () => {
  const room = `recbo-${Math.random().toString(36).slice(2, 8)}`;
  const ivy = await person("Ivy", room);
  const jo = await person("Jo", room);
  await press(ivy.page, "Record");
  for (const p of [ivy.page, jo.page]) await indicator(p).getByText("Recording", { exact: true }).waitFor({ timeout: 10000 });
  await ivy.page.waitForTimeout(2000); // what is recorded: two seconds with both in the main room
  // Jo goes to a breakout room for four seconds (Ivy stays).
  await press(ivy.page, "Breakout rooms");
  const panel = ivy.page.locator("aside.panel");
  await panel.getByRole("button", { name: "Add a room" }).click();
  await panel.getByRole("combobox", { name: "Room for Jo" }).selectOption({ index: 1 });
  await panel.getByRole("button", { name: "Open rooms" }).click();
  await indicator(jo.page).getByText("Recording the main room").waitFor({ timeout: 5000 });
  assert.match(await indicator(jo.page).getAttribute("title"), /this breakout room is not/);
  await ivy.page.waitForTimeout(4000); // what is recorded: four seconds with Jo away
  await panel.getByRole("combobox", { name: "Close after" }).selectOption({ label: "No countdown" });
  await panel.getByRole("button", { name: "Close all rooms" }).click();
  await indicator(jo.page).getByText("Recording", { exact: true }).waitFor({ timeout: 10000 });
  await ivy.page.waitForTimeout(2000); // what is recorded: two seconds together again
  await press(ivy.page, "Stop recording");
  await indicator(ivy.page).waitFor({ state: "hidden", timeout: 10000 });
  let man;
  for (let tries = 0; ; tries++) {
    man = await manifestFor(ivy, room);
    if (man?.ended_at && man.segments.length === 1) break;
    assert.ok(tries < 25, `the recording: ${JSON.stringify(man)}`);
    await ivy.page.waitForTimeout(500); // a poll interval, at most 25 looks
  }
  const name = Object.fromEntries(Object.entries(man.names));
  const tracks = man.segments[0].tracks.map((t) => ({ who: name[t.participant], kind: t.kind, from: (t.start_us - man.start_us) / 1e6, ms: t.duration_ms }));
  const of = (who, kind) => tracks.filter((t) => t.who === who && t.kind === kind).sort((a, b) => a.from - b.from);
  // Ivy: one file a track, the whole recording. Jo: two (before the breakout and after), and
  // nothing of the four seconds between.
  for (const kind of ["audio", "video"]) {
    assert.equal(of("Ivy", kind).length, 1, JSON.stringify(tracks));
    const [before, after] = of("Jo", kind);
    assert.ok(before && after && of("Jo", kind).length === 2, `Jo's ${kind}: ${JSON.stringify(tracks)}`);
    const away = after.from - (before.from + before.ms / 1000);
    assert.ok(away > 3, `Jo's ${kind} not recorded while away: ${away.toFixed(1)} s gap (${JSON.stringify(tracks)})`);
  }
  console.log(`# a breakout room mid-recording: Jo's files ${of("Jo", "video").map((t) => `${t.from.toFixed(1)}+${(t.ms / 1000).toFixed(1)} s`).join(", ")}; recording ${man.duration_ms} ms`);
  for (const p of [ivy.page, jo.page]) await p.close();
});
