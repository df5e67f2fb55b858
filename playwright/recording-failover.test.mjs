// Recording through a failover, end to end, in real Chromium against the real stack: the room's
// SFU is killed (kill -9) or drained (SIGTERM) mid-recording; the call moves, the next SFU records
// on (a second segment), and the first SFU's part reaches the recording — recovered from its files
// at its restart after kill -9, uploaded as the room leaves it when drained. (Its own file: the
// runner's time limit is per file, see `node_tests` in xtask/src/main.rs.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE } from "./browser.mjs";
import { person as personIn, press, decoding, roomSfu, sfuPidOf, mediaReport, until, allLive, exited, recordingIndicator, manifestFor as manifestIn, actAs } from "./call.mjs";

const browser = browserForFile();
const person = (name, room) => personIn(browser.context, BASE, name, room);
const indicator = recordingIndicator;
const manifestFor = (who, room) => manifestIn(BASE, who, room);

/** Makes `who`'s browser identity the one the context's requests carry. */
const as = (who) => actAs(browser.context, who);


/** Ada and Ben in a call record 4 s, then the room's SFU gets `signal`; the call moves (then
 *  `during` runs), 4 s more are recorded on the next SFU, then Ada stops. Resolves to the recording's
 *  manifest once it has two segments (at most 25 s after the stop). */
async function recordAcrossAMove(prefix, signal, during = async () => {}) {
  const room = `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
  const ada = await person("Ada", room);
  const ben = await person("Ben", room);
  const both = [ada.page, ben.page];
  for (const p of both) await until(p, "a remote video", (s) => Object.values(s).some((x) => x.kind === "video" && x.framesDecoded > 10), 15000);
  await press(ada.page, "Record");
  await indicator(ada.page).waitFor({ timeout: 10000 });
  // Four seconds on the first SFU, then the signal.
  const t0 = Date.now();
  while (Date.now() - t0 < 4000) {
    for (const p of both) assert.equal(await decoding(p), 1);
    await ada.page.waitForTimeout(1000); // the interval between checks
  }
  const from = await roomSfu(ada.page);
  const pid = await sfuPidOf(BASE, from);
  // Frames counted on the old PeerConnection are not the call back: each page must decode on a new one.
  for (const p of both) await p.evaluate(() => (window.edgemeetPc.__old = true));
  process.kill(pid, signal);
  const signalled = Date.now();
  // The call moves; the recording goes on there (the indicator never goes).
  for (const p of both) {
    const deadline = Date.now() + 12000;
    for (;;) {
      const fresh = await p.evaluate(() => !window.edgemeetPc.__old);
      if (fresh && (await roomSfu(p)) !== from && (await decoding(p)) === 1) break;
      if (Date.now() > deadline) assert.fail(`the call moved off ${from}: ${await mediaReport(p)}`);
      await p.waitForTimeout(200); // a poll interval
    }
    assert.ok(await indicator(p).isVisible(), "still recording after the move");
  }
  await during({ ada, room, from, pid, signalled });
  const t1 = Date.now();
  while (Date.now() - t1 < 4000) {
    await ada.page.waitForTimeout(1000); // the interval between checks (frames decoded since the last)
    for (const p of both) assert.equal(await decoding(p), 1);
  }
  await press(ada.page, "Stop recording");
  await indicator(ada.page).waitFor({ state: "hidden", timeout: 10000 });
  let man;
  for (let tries = 0; ; tries++) {
    man = await manifestFor(ada, room);
    if (man?.segments?.length === 2 && man.ended_at) break;
    assert.ok(tries < 25, `two segments: ${JSON.stringify(man?.segments?.map((s) => [s.sfu, s.tracks.length]))}`);
    await ada.page.waitForTimeout(1000); // a poll interval, at most 25 looks
  }
  const sfus = man.segments.map((s) => s.sfu);
  assert.equal(sfus[0], from, "the first SFU's part first");
  assert.notEqual(sfus[1], from);
  for (const s of man.segments) {
    assert.equal(s.tracks.filter((t) => t.kind === "video").length, 2, `both cameras in ${s.sfu}'s part`);
    // Every track of each part, in a failure: which camera started late, and by how much.
    for (const t of s.tracks) assert.ok(t.duration_ms >= 1500, `${s.sfu} ${t.file}: ${t.duration_ms} ms; the parts' tracks: ${JSON.stringify(man.segments.map((g) => [g.sfu, g.tracks.map((x) => [x.file, x.duration_ms])]))}`);
  }
  return { ada, ben, room, man, from };
}

test("the room's SFU killed mid-recording: the next SFU records on, the killed one's part is recovered at its restart, both play", async () => {
  // The stack starts the killed SFU again (3 s later): it finishes the files it left and uploads
  // them. The manifest then has two segments, one from each SFU.
  const { ada, ben, room, man } = await recordAcrossAMove("recfail", "SIGKILL");
  console.log(`# killed mid-recording: parts ${man.segments.map((s) => `${s.sfu} ${Math.max(...s.tracks.map((t) => t.duration_ms))} ms`).join(", ")}; recording ${man.duration_ms} ms`);

  // Both parts play: at 1.5 s the first SFU's cameras show a picture, near the end the second's.
  await as(ada);
  const list = await browser.context.newPage();
  await list.goto(`${BASE}/recordings`);
  await list.getByRole("listitem", { name: new RegExp(`^${room} on `) }).getByRole("button", { name: "Play" }).click();
  const player = list.getByRole("region", { name: /^Playing: / });
  await player.waitFor();
  for (const [at, seg] of [[1.5, man.segments[0]], [man.duration_ms / 1000 - 1.5, man.segments[1]]]) {
    await player.getByRole("slider", { name: "Position" }).fill(String(at));
    const want = seg.tracks.filter((t) => t.kind === "video").map((t) => `/api/recordings/${man.recording}/${seg.segment}/${t.file}`);
    await list.waitForFunction(
      (want) => want.every((u) => {
        const v = document.querySelector(`.player video[data-track="${u}"]`);
        return v && !v.hidden && v.readyState >= 2 && v.videoWidth > 0;
      }),
      want,
      { timeout: 10000 },
    );
  }
  for (const p of [ada.page, ben.page, list]) await p.close();
});

test("the room's SFU drained mid-recording: it finishes and uploads its part as the room leaves, the next SFU records on", async () => {
  await allLive(BASE); // the SFU killed before is back
  const { ada, ben, man } = await recordAcrossAMove("recdrain", "SIGTERM", async ({ ada, room, from, pid, signalled }) => {
    // While the meeting still records on the next SFU, the drained one's part is there already:
    // it ended its segment when the room left it and uploaded it before exiting.
    let man;
    for (let tries = 0; ; tries++) {
      man = await manifestFor(ada, room);
      if (man?.segments?.some((s) => s.sfu === from)) break;
      assert.ok(tries < 40, `the drained SFU's part, while recording: ${JSON.stringify(man?.segments?.map((s) => s.sfu))}`);
      await ada.page.waitForTimeout(250); // a poll interval, at most 40 looks
    }
    console.log(`# drained mid-recording: its part listed ${Date.now() - signalled} ms after SIGTERM`);
    await exited(pid, 5000);
    console.log(`# drained mid-recording: the SFU exited ${Date.now() - signalled} ms after SIGTERM`);
  });
  console.log(`# drained mid-recording: parts ${man.segments.map((s) => `${s.sfu} ${Math.max(...s.tracks.map((t) => t.duration_ms))} ms`).join(", ")}; recording ${man.duration_ms} ms`);
  assert.ok(man.segments[0].tracks.every((t) => t.duration_ms >= 3000), `the drained SFU's part is whole: ${JSON.stringify(man.segments[0].tracks)}`);
  for (const p of [ada.page, ben.page]) await p.close();
  await allLive(BASE);
});
