// End to end through the SFU: three Chromium pages (fake camera and microphone) in one room. Every
// assertion is on getStats() of the page's RTCPeerConnection (exposed as window.edgemeetPc).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { browserForFile, BASE, ARTIFACTS } from "./browser.mjs";
import { joinAs as joinAsIn, tile, idOf, inbound, until, packetRate } from "./call.mjs";

const browser = browserForFile();

const joinAs = (name, room) => joinAsIn(browser.context, BASE, name, room);

test("three pages decode each other's video and audio through the SFU; mute stops the audio; leaving removes the tile", async () => {
  const room = `media-${Math.random().toString(36).slice(2, 8)}`;
  const names = ["Ada", "Bob", "Cy"];
  const pages = {};
  for (const n of names) pages[n] = await joinAs(n, room);
  const ids = {};
  for (const n of names) ids[n] = await idOf(pages[names.find((m) => m !== n)], n);

  // Each page decodes the two remote videos: frames rising, a real frame width.
  for (const n of names) {
    const others = names.filter((m) => m !== n);
    const first = await until(pages[n], `${n} decodes ${others}`, (s) =>
      others.every((o) => s[`${ids[o]}-video`]?.framesDecoded > 0 && s[`${ids[o]}-video`]?.frameWidth > 0), 15000);
    await until(pages[n], `${n}'s decoded frames keep rising`, (s) =>
      others.every((o) => s[`${ids[o]}-video`].framesDecoded >= first[`${ids[o]}-video`].framesDecoded + 10));
    // The remote tiles show the video element with the stream.
    for (const o of others) {
      const w = await tile(pages[n], o).locator("video").evaluate((v) => v.videoWidth);
      assert.ok(w > 0, `${n} shows ${o}'s video (videoWidth ${w})`);
    }
  }
  await pages.Ada.screenshot({ path: join(ARTIFACTS, "media.png") });

  // Remote audio arrives at Opus's 20 ms pace: about 50 packets per second.
  const rate = await packetRate(pages.Ada, `${ids.Bob}-audio`);
  assert.ok(rate > 35 && rate < 65, `Ada receives Bob's audio at ${rate.toFixed(1)} packets/s`);

  // Bob mutes: the others see the indicator within 1 s and his audio packets stop.
  await pages.Bob.getByRole("button", { name: "Mute microphone" }).first().click();
  await tile(pages.Ada, "Bob").getByTestId("muted").waitFor({ state: "visible", timeout: 1000 });
  await tile(pages.Cy, "Bob").getByTestId("muted").waitFor({ state: "visible", timeout: 1000 });
  let muted;
  const deadline = Date.now() + 5000;
  do {
    muted = await packetRate(pages.Ada, `${ids.Bob}-audio`, 1000);
  } while (muted > 2 && Date.now() < deadline);
  assert.ok(muted <= 2, `Bob's audio still arrives at ${muted.toFixed(1)} packets/s after muting`);
  // His video still flows.
  const v0 = (await inbound(pages.Ada))[`${ids.Bob}-video`].framesDecoded;
  await until(pages.Ada, "Bob's video keeps decoding while he is muted", (s) => s[`${ids.Bob}-video`].framesDecoded > v0 + 10);

  // Cy leaves: her tile is gone from the others within 2 s.
  const left = Date.now();
  await pages.Cy.getByRole("button", { name: "Leave" }).click();
  await tile(pages.Ada, "Cy").waitFor({ state: "detached", timeout: 2000 });
  await tile(pages.Bob, "Cy").waitFor({ state: "detached", timeout: 2000 });
  assert.ok(Date.now() - left < 2500);
  for (const n of names) await pages[n].close();
});

test("a dropped signaling socket reconnects and resumes: same media session, nobody sees a leave", async () => {
  const room = `resume-${Math.random().toString(36).slice(2, 8)}`;
  const ada = await joinAs("Ada", room);
  const bob = await joinAs("Bob", room);
  const adaId = await idOf(bob, "Ada");
  const bobId = await idOf(ada, "Bob");
  await until(ada, "Ada decodes Bob", (s) => s[`${bobId}-video`]?.framesDecoded > 0, 15000);
  await until(bob, "Bob decodes Ada", (s) => s[`${adaId}-video`]?.framesDecoded > 0, 15000);

  // Drop Ada's socket the way a network blip does (not a clean close), and mark her PeerConnection.
  await ada.evaluate(() => {
    window.edgemeetPc.__before = true;
    window.edgemeetWs.close(4001, "test: dropped");
  });
  await tile(bob, "Ada").getByText("Reconnecting…").waitFor({ state: "visible", timeout: 3000 });
  await tile(bob, "Ada").getByText("Reconnecting…").waitFor({ state: "hidden", timeout: 10000 });
  await ada.getByTestId("room-status").getByText("2 in the room").waitFor({ timeout: 5000 });

  // Same PeerConnection (nothing republished), media still flowing both ways, no leave seen.
  assert.equal(await ada.evaluate(() => window.edgemeetPc.__before === true), true);
  const a0 = (await inbound(ada))[`${bobId}-video`].framesDecoded;
  const b0 = (await inbound(bob))[`${adaId}-video`].framesDecoded;
  await until(ada, "Ada keeps decoding Bob", (s) => s[`${bobId}-video`].framesDecoded > a0 + 10);
  await until(bob, "Bob keeps decoding Ada", (s) => s[`${adaId}-video`].framesDecoded > b0 + 10);
  assert.equal(await bob.getByTestId("toasts").getByText("Ada left").count(), 0);
  await ada.close();
  await bob.close();
});
