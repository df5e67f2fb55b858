// Simulcast, adaptive layers, active speaker and screen sharing, end to end: the fake camera
// captures 1280×720 and publishes three layers (320×180, 640×360, 1280×720); what each page
// receives is read from getStats() of its RTCPeerConnection (window.edgemeetPc).
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE, toneWav } from "./browser.mjs";
import { joinAs as joinAsIn, press } from "./call.mjs";

// Microphones play a steady tone, so whoever is unmuted is clearly speaking.
const browser = browserForFile([`--use-file-for-fake-audio-capture=${toneWav()}`]);
const joinAs = (name, room) => joinAsIn(browser.context, BASE, name, room);
const newRoom = (label) => `${label}-${Math.random().toString(36).slice(2, 8)}`;
const tile = (page, name) => page.getByRole("group", { name, exact: true });
/** Shows `id`'s tile with `css` (a style sheet rule, which the page's own layout — inline styles
 *  it sets again whenever the stage's size changes — cannot undo); returns what takes it away. */
async function restyleTile(page, id, css) {
  const el = await page.addStyleTag({ content: `[data-testid="tile"][data-participant="${id}"] { ${css} }` });
  return () => el.evaluate((e) => e.remove());
}

/** getStats() of the inbound video whose track plays in the `<video>` matching `selector`. */
async function videoStats(page, selector) {
  return page.evaluate(async (selector) => {
    const pc = window.edgemeetPc;
    const v = document.querySelector(selector);
    const track = v?.srcObject?.getVideoTracks?.()[0];
    if (!pc || !track) return null;
    let out = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.trackIdentifier === track.id) {
        out = {
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          keyFramesDecoded: s.keyFramesDecoded ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
          timestamp: s.timestamp,
        };
      }
    });
    return out;
  }, selector);
}

/** The publisher's simulcast layers as it sends them: per rid, width, frames and keyframes
 *  encoded, and the keyframe requests (PLI) it got for that layer. */
async function sentLayers(page) {
  return page.evaluate(async () => {
    const o = {};
    (await window.edgemeetPc.getStats()).forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video" && s.rid)
        o[s.rid] = { w: s.frameWidth, frames: s.framesEncoded, keyframes: s.keyFramesEncoded, plis: s.pliCount, limit: s.qualityLimitationReason, active: s.active };
    });
    return o;
  });
}

/** Polls until `ok(stats)`; fails after `timeout` ms with the last stats. Returns [stats, ms taken]. */
async function until(page, selector, what, ok, timeout) {
  const start = Date.now();
  let last;
  while (Date.now() - start < timeout) {
    last = await videoStats(page, selector);
    if (last && ok(last)) return [last, Date.now() - start];
    await page.waitForTimeout(100);
  }
  assert.fail(`${what}: not within ${timeout} ms; last stats: ${JSON.stringify(last)}`);
}

test("a big tile receives the full layer, a thumbnail the quarter layer without a freeze, a hidden tile nothing", async () => {
  const room = newRoom("layers");
  const viewer = await joinAs("Vera", room);
  const pub = await joinAs("Pat", room);
  try {
    const patId = await tile(viewer, "Pat").getAttribute("data-participant");
    const sel = `video[data-publisher="${patId}"][data-source="camera"]`;
    // Speaker view: Pat's tile is the big one (about 490 px tall here, so 720p is wanted).
    await press(viewer, "Speaker view");
    await press(viewer, "Stats");
    let big, tookBig;
    try {
      [big, tookBig] = await until(viewer, sel, "the big tile receives 1280 px", (s) => s.frameWidth === 1280, 30000);
    } catch (e) {
      // What the publisher sends, to tell a layer choice problem from an encoder that never sent 720p.
      const sent = await pub.evaluate(async () => {
        const o = [];
        (await window.edgemeetPc.getStats()).forEach((s) => {
          if (s.type === "outbound-rtp" && s.kind === "video" && s.rid)
            o.push({ rid: s.rid, w: s.frameWidth, frames: s.framesEncoded, limit: s.qualityLimitationReason, active: s.active });
          if (s.type === "candidate-pair" && s.nominated) o.push({ availableOutgoingBitrate: s.availableOutgoingBitrate });
        });
        return o;
      });
      console.log("publisher sends:", JSON.stringify(sent));
      throw e;
    }
    console.log(`big tile: ${big.frameWidth}×${big.frameHeight} after ${tookBig} ms`);
    if (tookBig > 5000) console.log("publisher's layers (a slow first 720p):", JSON.stringify(await sentLayers(pub)));
    // The statistics panel says the same.
    const row = viewer.locator(`[data-testid="stats-row"][data-stream="${patId}"]`);
    await row.and(viewer.locator('[data-layer="f"]')).waitFor({ timeout: 5000 });

    // Thumbnail size: the received width drops to ≤ 320 within 3 s and frames keep coming.
    const thumbnail = await restyleTile(viewer, patId, "width:160px !important; height:90px !important; aspect-ratio:auto !important");
    const sentBefore = await sentLayers(pub);
    const start = Date.now();
    let last = await videoStats(viewer, sel);
    const trace = [];
    let lastProgress = Date.now();
    let longestStall = 0;
    let small = null;
    while (Date.now() - start < 3000 + 1000) {
      await viewer.waitForTimeout(100);
      const s = await videoStats(viewer, sel);
      if (s.framesDecoded > last.framesDecoded) {
        longestStall = Math.max(longestStall, Date.now() - lastProgress);
        lastProgress = Date.now();
      }
      last = s;
      trace.push(`${Date.now() - start}:${s.frameWidth}/${s.framesDecoded}/${s.keyFramesDecoded}`);
      if (!small && s.frameWidth <= 320) small = Date.now() - start;
      if (small && Date.now() - start > small + 1000) break;
    }
    longestStall = Math.max(longestStall, Date.now() - lastProgress);
    console.log(`thumbnail: ${last.frameWidth}×${last.frameHeight} after ${small} ms; longest decode stall ${longestStall} ms`);
    if (small === null || small > 3000) {
      // Which step of the switch was slow: the layer's keyframe requests at the publisher (PLIs
      // the SFU sent for it), its keyframes, and what the viewer decoded (ms:width/frames/keyframes).
      console.log("publisher's layers before:", JSON.stringify(sentBefore));
      console.log("publisher's layers after: ", JSON.stringify(await sentLayers(pub)));
      console.log("viewer:", trace.join(" "));
      console.log("tile now:", await tile(viewer, "Pat").evaluate((el) => `${el.getBoundingClientRect().width}×${el.getBoundingClientRect().height} px`));
    }
    assert.ok(small !== null && small <= 3000, `width ${last.frameWidth} after 3 s`);
    assert.ok(longestStall < 1000, `the decoder stalled ${longestStall} ms around the switch`);
    await row.and(viewer.locator('[data-layer="q"]')).waitFor({ timeout: 5000 });

    // Hidden: its inbound bytes stop.
    const hidden = await restyleTile(viewer, patId, "display:none !important");
    await viewer.waitForTimeout(1500); // the report goes out within 300 ms; let the last packets land
    const a = await videoStats(viewer, sel);
    await viewer.waitForTimeout(2000);
    const b = await videoStats(viewer, sel);
    const rate = ((b.bytesReceived - a.bytesReceived) * 1000) / (b.timestamp - a.timestamp);
    console.log(`hidden tile: ${rate.toFixed(0)} bytes/s`);
    assert.ok(rate < 500, `a hidden tile still receives ${rate.toFixed(0)} bytes/s`);

    // Shown again: decoding resumes.
    await hidden();
    await thumbnail();
    await until(viewer, sel, "decoding after being shown again", (s) => s.framesDecoded > b.framesDecoded + 10, 8000);
  } finally {
    await viewer.close();
    await pub.close();
  }
});

test("the active speaker is highlighted; a shared screen reaches the others and is shown big", async () => {
  const room = newRoom("screen");
  const ann = await joinAs("Ann", room);
  const ben = await joinAs("Ben", room);
  try {
    // Only Ben's microphone is on: he becomes the active speaker on Ann's page.
    await ann.getByRole("button", { name: "Mute microphone" }).click();
    await tile(ann, "Ben").and(ann.locator(".speaking")).waitFor({ timeout: 15000 });

    // Ben shares his screen (Chromium's fake display capture answers without a picker).
    await ben.getByRole("button", { name: "Share screen" }).click();
    await ben.getByRole("button", { name: "Stop sharing" }).waitFor({ timeout: 5000 });
    const screen = ann.getByTestId("screen-tile");
    await screen.waitFor({ timeout: 10000 });
    const benId = await tile(ann, "Ben").getAttribute("data-participant");
    const sel = `video[data-publisher="${benId}"][data-source="screen"]`;
    const [s] = await until(ann, sel, "the screen decodes", (s) => s.framesDecoded > 5 && s.frameWidth > 0, 15000);
    console.log(`screen: ${s.frameWidth}×${s.frameHeight}, ${s.framesDecoded} frames`);
    assert.match((await screen.getAttribute("class")) ?? "", /featured/, "the presenter layout shows the screen big");

    // Stopping removes the screen tile.
    await ben.getByRole("button", { name: "Stop sharing" }).click();
    await screen.waitFor({ state: "detached", timeout: 5000 });
  } finally {
    await ann.close();
    await ben.close();
  }
});
