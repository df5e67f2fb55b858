// End to end: three people in one room (signaling through the Room Durable Object in workerd).
// These tests cover presence, mute state and leaving; media.test.mjs checks the media itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { browserForFile, BASE, ARTIFACTS } from "./browser.mjs";
import { joinAs as joinAsIn } from "./call.mjs";

const browser = browserForFile();

const joinAs = (name, room) => joinAsIn(browser.context, BASE, name, room);

const tile = (page, name) => page.getByRole("group", { name, exact: true });

test("three people see each other's tiles, mute state within 1 s, and leaving within 2 s", async () => {
  const room = `trio-${Math.random().toString(36).slice(2, 8)}`;
  const ada = await joinAs("Ada", room);
  const bob = await joinAs("Bob", room);
  await ada.getByTestId("toasts").getByText("Bob joined").waitFor({ timeout: 5000 });
  const cy = await joinAs("Cy", room);
  for (const [page, others] of [[ada, ["Bob", "Cy"]], [bob, ["Ada", "Cy"]], [cy, ["Ada", "Bob"]]]) {
    for (const n of others) await tile(page, n).waitFor({ timeout: 5000 });
    assert.equal(await page.getByTestId("tile").count(), 2);
    await page.getByTestId("room-status").getByText("3 in the room").waitFor({ timeout: 5000 });
  }
  // The first joiner hosts: the others see the badge on Ada's tile.
  await tile(bob, "Ada").getByText("Host", { exact: true }).waitFor({ timeout: 2000 });

  // Bob mutes with the keyboard shortcut; Ada and Cy see it within 1 s, and his track is disabled.
  const muted = Date.now();
  await bob.keyboard.press("Control+d");
  await bob.getByRole("button", { name: "Unmute microphone" }).waitFor({ timeout: 1000 });
  await tile(ada, "Bob").getByTestId("muted").waitFor({ state: "visible", timeout: 1000 });
  await tile(cy, "Bob").getByTestId("muted").waitFor({ state: "visible", timeout: 1000 });
  assert.ok(Date.now() - muted < 1500, `mute took ${Date.now() - muted} ms to show`);
  const audioEnabled = await bob.evaluate(() =>
    [...document.querySelectorAll(".tile.me video")].flatMap((v) => v.srcObject?.getAudioTracks() ?? []).some((t) => t.enabled));
  assert.equal(audioEnabled, false);
  await ada.screenshot({ path: join(ARTIFACTS, "room.png") });

  // Cy leaves with the button: gone from both others within 2 s, with a toast.
  const left = Date.now();
  await cy.getByRole("button", { name: "Leave" }).click();
  await tile(ada, "Cy").waitFor({ state: "detached", timeout: 2000 });
  await tile(bob, "Cy").waitFor({ state: "detached", timeout: 2000 });
  await ada.getByTestId("toasts").getByText("Cy left").waitFor({ timeout: 2000 });
  assert.ok(Date.now() - left < 2500);
  await cy.getByRole("button", { name: "Join" }).waitFor();

  // Bob closes his tab: that is leaving too.
  await bob.close({ runBeforeUnload: true });
  await tile(ada, "Bob").waitFor({ state: "detached", timeout: 2000 });
  await ada.getByTestId("room-status").getByText("1 in the room").waitFor({ timeout: 2000 });
});
