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

// Starts watching `page` for a change to `name`'s tile — `"muted"`: its Muted badge shows;
// `"gone"`: the tile is gone — and resolves, once the watch is in place, to a function that waits
// for the time (Date.now() in the page, the clock this process reads too) it was first seen, in
// ms after `since`, or Infinity if not within 5 s. Started before the change, so what is measured
// is the change reaching the page, not this test's own round trips to each page in turn.
async function watchFor(page, what, name) {
  const key = `watch${Math.random().toString(36).slice(2)}`;
  await page.evaluate(([key, what, name]) => {
    const tiles = () =>
      [...document.querySelectorAll('[data-testid="tile"]')].filter((t) => t.getAttribute("aria-label") === name);
    const seen = () =>
      what === "gone"
        ? tiles().length === 0
        : tiles().some((t) => t.querySelector('[data-testid="muted"]')?.checkVisibility());
    window[key] = new Promise((resolve) => {
      if (seen()) return resolve(Date.now());
      const obs = new MutationObserver(() => {
        if (seen()) {
          obs.disconnect();
          resolve(Date.now());
        }
      });
      obs.observe(document.body, { subtree: true, childList: true, attributes: true });
      setTimeout(() => {
        obs.disconnect();
        resolve(null);
      }, 5000);
    });
  }, [key, what, name]);
  return async (since) => {
    const at = await page.evaluate((key) => window[key], key);
    return at === null ? Infinity : at - since;
  };
}

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
  const adaSees = await watchFor(ada, "muted", "Bob");
  const cySees = await watchFor(cy, "muted", "Bob");
  const muted = Date.now();
  await bob.keyboard.press("Control+d");
  await bob.getByRole("button", { name: "Unmute microphone" }).waitFor({ timeout: 1000 });
  const shown = [await adaSees(muted), await cySees(muted)];
  console.log(`# Bob's mute shown to Ada and Cy after ${shown.join(" and ")} ms`);
  assert.ok(shown.every((ms) => ms >= 0 && ms < 1000), `mute took ${shown.join(" and ")} ms to show`);
  await tile(ada, "Bob").getByTestId("muted").waitFor({ state: "visible", timeout: 1000 });
  await tile(cy, "Bob").getByTestId("muted").waitFor({ state: "visible", timeout: 1000 });
  const audioEnabled = await bob.evaluate(() =>
    [...document.querySelectorAll(".tile.me video")].flatMap((v) => v.srcObject?.getAudioTracks() ?? []).some((t) => t.enabled));
  assert.equal(audioEnabled, false);
  await ada.screenshot({ path: join(ARTIFACTS, "room.png") });

  // Cy leaves with the button: gone from both others within 2 s, with a toast.
  const adaLoses = await watchFor(ada, "gone", "Cy");
  const bobLoses = await watchFor(bob, "gone", "Cy");
  const left = Date.now();
  await cy.getByRole("button", { name: "Leave" }).click();
  const gone = [await adaLoses(left), await bobLoses(left)];
  console.log(`# Cy's tile gone for Ada and Bob after ${gone.join(" and ")} ms`);
  assert.ok(gone.every((ms) => ms >= 0 && ms < 2000), `leaving took ${gone.join(" and ")} ms to show`);
  await tile(ada, "Cy").waitFor({ state: "detached", timeout: 2000 });
  await tile(bob, "Cy").waitFor({ state: "detached", timeout: 2000 });
  await ada.getByTestId("toasts").getByText("Cy left").waitFor({ timeout: 2000 });
  await cy.getByRole("button", { name: "Join" }).waitFor();

  // Bob closes his tab: that is leaving too.
  await bob.close({ runBeforeUnload: true });
  await tile(ada, "Bob").waitFor({ state: "detached", timeout: 2000 });
  await ada.getByTestId("room-status").getByText("1 in the room").waitFor({ timeout: 2000 });
});
