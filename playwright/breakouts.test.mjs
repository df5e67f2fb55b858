// Breakout rooms end to end, in real Chromium against the real stack: four pages; the host plans
// two rooms in the Breakout rooms panel, puts two people in each (herself by joining one), opens
// them; each page then receives media from its room-mate only (getStats: packets rising only on
// the room-mate's streams) and shows only that tile; a message to all rooms reaches both rooms;
// "Close all rooms" with a countdown brings all four back, and each decodes the other three again.
// Prints how long a move takes to the first remote frame in the new room; room-mates who move
// together keep decoding each other without a gap. The host's page hears the room 300 ms late (a
// slow link, or a slow machine): her picks, made faster than the room answers, must all count.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { browserForFile, BASE, ARTIFACTS } from "./browser.mjs";
import { joinAs as joinAsIn, idOf, tile, press, hearRoomLate, heardFromRoom, mediaReport } from "./call.mjs";

const browser = browserForFile();
const joinAs = (name, room, opts) => joinAsIn(browser.context, BASE, name, room, opts);

/** Per inbound stream (by its stats id, new for a new track): whose track, packets and frames. */
async function streams(page) {
  return page.evaluate(async () => {
    const pc = window.edgemeetPc;
    const out = {};
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.trackIdentifier) {
        out[s.id] = { track: s.trackIdentifier, packets: s.packetsReceived ?? 0, frames: s.framesDecoded ?? 0 };
      }
    });
    return out;
  });
}

/** The participant ids whose media reaches `page` over `ms` (packets rising on any of their streams). */
async function heardFrom(page, ms = 1500) {
  const a = await streams(page);
  await page.waitForTimeout(ms);
  const b = await streams(page);
  const who = new Set();
  for (const [id, s] of Object.entries(b)) {
    if (s.packets > (a[id]?.packets ?? 0)) who.add(s.track.replace(/-(audio|video|screen.*)$/, ""));
  }
  return [...who].sort();
}

/** Waits until `page` decodes video from exactly `ids` (frames rising on each, in a 1 s window);
 *  returns how long that took. */
async function decodesOnly(page, what, ids, timeout = 15000) {
  const want = [...ids].sort().join(",");
  const start = Date.now();
  let got = "";
  while (Date.now() - start < timeout) {
    const a = await streams(page);
    await page.waitForTimeout(500);
    const b = await streams(page);
    got = [...new Set(Object.entries(b)
      .filter(([id, s]) => s.track.endsWith("-video") && s.frames > (a[id]?.frames ?? 0))
      .map(([, s]) => s.track.replace(/-video$/, "")))].sort().join(",");
    if (got === want) return Date.now() - start;
  }
  assert.fail(`${what}: decoding [${got}], wanted [${want}] within ${timeout} ms; ${await mediaReport(page)}`);
}

/** Milliseconds from now until `page` decodes a frame of a video stream of `id` it did not have
 *  before (a new track: the move's first remote frame). Polls getStats every 25 ms. */
async function firstNewFrame(page, id, before, timeout = 10000) {
  const start = Date.now();
  while (Date.now() - start < timeout) {
    const s = await streams(page);
    const fresh = Object.entries(s).some(([sid, x]) => x.track === `${id}-video` && !before[sid] && x.frames > 0);
    if (fresh) return Date.now() - start;
    await page.waitForTimeout(25);
  }
  assert.fail(`no new frame of ${id}'s video within ${timeout} ms`);
}

test("breakout rooms: two rooms of two decode only each other, a message reaches every room, close-all brings all four back", async () => {
  const room = `bo-${Math.random().toString(36).slice(2, 8)}`;
  const names = ["Ann", "Bob", "Cy", "Dee"];
  const pages = {};
  for (const n of names) {
    pages[n] = await joinAs(n, room, n === "Ann" ? { beforeJoin: (p) => hearRoomLate(p, 300) } : {});
  }
  const ids = {};
  for (const n of names) ids[n] = await idOf(pages[names.find((m) => m !== n)], n);
  const others = (n) => names.filter((m) => m !== n).map((m) => ids[m]);
  for (const n of names) await decodesOnly(pages[n], `${n} in the main room`, others(n));

  // Ann (the host) plans two rooms in the panel: names, one picker per person.
  const ann = pages.Ann;
  await press(ann, "Breakout rooms");
  const panel = ann.locator("aside.panel");
  await panel.getByRole("button", { name: "Add a room" }).click();
  await panel.getByRole("textbox", { name: "Room 1 name" }).waitFor();
  await panel.getByRole("button", { name: "Add a room" }).click();
  await panel.getByRole("textbox", { name: "Room 2 name" }).waitFor();
  for (const [n, name] of [[1, "Red"], [2, "Blue"]]) {
    const box = panel.getByRole("textbox", { name: `Room ${n} name` });
    await box.fill(name);
    await box.press("Enter");
    // The room sends the renamed plan back: the pickers offer the new name.
    await panel.getByRole("option", { name, exact: true }).first().waitFor({ state: "attached" });
  }
  for (const [who, to] of [["Bob", "Red"], ["Cy", "Blue"], ["Dee", "Blue"]]) {
    await panel.getByRole("combobox", { name: `Room for ${who}` }).selectOption({ label: to });
  }
  await ann.waitForFunction(() => document.querySelectorAll(".breakout-people select").length === 3);
  // The room has all three picks: its plan says so, and each picker shows it.
  const want = { [ids.Bob]: 1, [ids.Cy]: 2, [ids.Dee]: 2 };
  await heardFromRoom(ann, (f) => f.type === "breakouts" && isDeepStrictEqual(f.breakouts.assigned, want),
    () => `the room's plan with Bob in Red, Cy and Dee in Blue (plans heard: ${JSON.stringify(ann.__heard.filter((f) => f.type === "breakouts").map((f) => f.breakouts.assigned))})`);
  for (const [who, to] of [["Bob", "Red"], ["Cy", "Blue"], ["Dee", "Blue"]]) {
    const picker = panel.getByRole("combobox", { name: `Room for ${who}` });
    await ann.waitForFunction(([el, to]) => el.selectedOptions[0]?.textContent === to, [await picker.elementHandle(), to], { timeout: 5000 });
  }
  // Opening moves everyone assigned at once. Cy and Dee move together: Cy keeps decoding the
  // stream of Dee it had, without a gap (no new track, frames rising through the move).
  const beforeCy = await streams(pages.Cy);
  const [deeStream, deeBefore] = Object.entries(beforeCy).find(([, x]) => x.track === `${ids.Dee}-video`);
  await panel.getByRole("button", { name: "Open rooms" }).click();
  await pages.Cy.getByTestId("breakout-where").getByText("You are in Blue").waitFor();
  const deeAfter = (await streams(pages.Cy))[deeStream];
  assert.ok(deeAfter && deeAfter.frames > deeBefore.frames, `Cy still decodes Dee's stream ${deeStream} across the move`);
  await decodesOnly(pages.Cy, "Cy in Blue", [ids.Dee]);
  const deeLater = (await streams(pages.Cy))[deeStream];
  assert.ok(deeLater.frames > deeAfter.frames, "the same stream, still decoding");
  // The host visits Red: her first frame of Bob there.
  const beforeAnn = await streams(ann);
  await panel.getByRole("button", { name: "Join Red" }).click();
  const annFirst = await firstNewFrame(ann, ids.Bob, beforeAnn);
  console.log(`host joins Red → first frame of Bob: ${annFirst} ms`);
  assert.ok(annFirst < 3000, `a move shows the room-mate within 3 s (${annFirst} ms)`);

  // Each page: media from its room-mate only, and only that tile.
  const mate = { Ann: "Bob", Bob: "Ann", Cy: "Dee", Dee: "Cy" };
  for (const n of names) {
    await decodesOnly(pages[n], `${n} in a breakout room`, [ids[mate[n]]]);
    assert.deepEqual(await heardFrom(pages[n]), [ids[mate[n]]], `${n} receives media from ${mate[n]} only`);
    await tile(pages[n], mate[n]).waitFor();
    for (const o of names.filter((m) => m !== n && m !== mate[n])) {
      assert.equal(await tile(pages[n], o).count(), 0, `${n} shows no tile of ${o}`);
    }
  }
  await pages.Cy.getByTestId("breakout-where").getByText("You are in Blue").waitFor();
  await ann.screenshot({ path: join(ARTIFACTS, "breakouts-host.png") });

  // A message to every room.
  await panel.getByRole("textbox", { name: "Message all rooms" }).fill("Two minutes left");
  await panel.getByRole("button", { name: "Send to all rooms" }).click();
  for (const n of names) {
    await pages[n].getByRole("region", { name: "Breakout rooms" }).getByText("Ann to all rooms: Two minutes left").waitFor({ timeout: 5000 });
  }
  await pages.Dee.screenshot({ path: join(ARTIFACTS, "breakouts-participant.png") });
  // On a phone: the banner, the stage and the host's panel still fit (the panel is a sheet).
  await ann.setViewportSize({ width: 390, height: 844 });
  await ann.screenshot({ path: join(ARTIFACTS, "breakouts-host-390.png") });
  const fits = await ann.evaluate(() => {
    const inView = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.left >= 0 && r.right <= innerWidth + 1 && r.top >= 0 && r.bottom <= innerHeight + 1; };
    return {
      banner: inView(document.querySelector(".breakout-banner")),
      close: inView(document.querySelector("aside.panel .close")),
      wide: document.documentElement.scrollWidth <= innerWidth + 1,
    };
  });
  assert.deepEqual(fits, { banner: true, close: true, wide: true }, "390-px phone");
  await ann.setViewportSize({ width: 1280, height: 800 });

  // Close all rooms after a 10 s countdown everyone sees; then all four are back together.
  await panel.getByRole("combobox", { name: "Close after" }).selectOption({ label: "10 seconds" });
  const closing = Date.now();
  await panel.getByRole("button", { name: "Close all rooms" }).click();
  for (const n of names) {
    await pages[n].getByRole("timer").getByText(/^Breakout rooms close in 0:(0\d|10)$/).waitFor({ timeout: 5000 });
  }
  for (const n of names) {
    await pages[n].getByRole("region", { name: "Breakout rooms" }).waitFor({ state: "hidden", timeout: 20000 });
  }
  const back = Date.now() - closing;
  assert.ok(back >= 9000, `nobody moved before the countdown ended (${back} ms)`);
  for (const n of names) {
    const took = await decodesOnly(pages[n], `${n} back in the main room`, others(n));
    console.log(`${n}: decoding all three again ${took} ms after the rooms closed`);
    // What a person sees: each of the three tiles plays a live video again (not a stream left
    // over from before the move).
    for (const o of names.filter((m) => m !== n)) {
      await pages[n].waitForFunction((name) => {
        const v = document.querySelector(`[role="group"][aria-label="${name}"] video`);
        return !!v && v.videoWidth > 0 && !!v.srcObject && v.srcObject.getVideoTracks().some((t) => t.readyState === "live");
      }, o, { timeout: 5000 });
    }
  }
  for (const p of Object.values(pages)) await p.close();
});
