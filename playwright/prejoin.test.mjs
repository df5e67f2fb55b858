// End to end: the app served by the edge in workerd, in Debian's Chromium with a fake camera.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { browserForFile, BASE, ARTIFACTS } from "./browser.mjs";

assert.ok(BASE, "run through `cargo xtask test` (EDGEMEET_URL)");
const browser = browserForFile();

test("pre-join shows the camera preview playing and three live media regions", async () => {
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${BASE}/daily-standup`);

  // The preview decodes real frames from the fake camera: width > 0 and the frame count rises.
  const preview = page.getByTestId("preview");
  await page.waitForFunction(() => document.querySelector("[data-testid=preview]")?.videoWidth > 0, null, { timeout: 15000 });
  const first = await preview.evaluate((v) => ({ w: v.videoWidth, h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames }));
  assert.ok(first.w > 0 && first.h > 0, JSON.stringify(first));
  await page.waitForFunction(
    (n) => document.querySelector("[data-testid=preview]").getVideoPlaybackQuality().totalVideoFrames > n + 10,
    first.frames,
    { timeout: 10000 },
  );

  // The room name comes from the link; the status line lists the live regions from /api/health.
  assert.equal(await page.getByLabel("Room").inputValue(), "daily-standup");
  await page.getByTestId("health").getByText("3 media regions live").waitFor({ timeout: 10000 });
  const health = await page.evaluate(async () => (await fetch("/api/health")).json());
  assert.equal(health.live_sfus, 3);
  assert.deepEqual(health.sfus.filter((s) => s.healthy).map((s) => s.region).sort(), ["ap-south", "eu-west", "us-east"]);

  await page.screenshot({ path: join(ARTIFACTS, "prejoin.png") });
  assert.deepEqual(errors, []);
});

test("controls are labelled buttons that toggle the preview tracks", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${BASE}/controls-check`);
  await page.waitForFunction(() => document.querySelector("[data-testid=preview]")?.videoWidth > 0, null, { timeout: 15000 });
  const enabled = (kind) =>
    page.getByTestId("preview").evaluate((v, k) => v.srcObject.getTracks().filter((t) => t.kind === k).every((t) => t.enabled), kind);

  await page.getByRole("button", { name: "Mute microphone" }).click();
  await page.getByRole("button", { name: "Unmute microphone" }).waitFor();
  assert.equal(await enabled("audio"), false);
  await page.getByRole("button", { name: "Turn camera off" }).press("Enter");
  await page.getByRole("button", { name: "Turn camera on" }).waitFor();
  assert.equal(await enabled("video"), false);
  await page.getByRole("status").getByText("Camera is off").waitFor();
  await page.getByRole("button", { name: "Turn camera on" }).click();
  assert.equal(await enabled("video"), true);
});

test("bad names get a clear message; a good join connects to the room", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${BASE}/`);
  await page.getByLabel("Your name").fill("Ada");
  await page.getByLabel("Room").fill("bad room!");
  await page.getByRole("button", { name: "Join" }).click();
  await page.getByTestId("form-error").getByText("use letters, digits").waitFor();

  await page.getByLabel("Room").fill("E2E-Room");
  await page.getByRole("button", { name: "Join" }).click();
  await page.getByTestId("room-status").getByText("1 in the room").waitFor({ timeout: 10000 });
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "e2e-room");
  await page.getByRole("group", { name: "Ada (you)" }).waitFor();
  assert.equal(new URL(page.url()).pathname, "/e2e-room");

  // The display name is remembered for next time.
  const again = await browser.context.newPage();
  await again.goto(`${BASE}/other`);
  assert.equal(await again.getByLabel("Your name").inputValue(), "Ada");
});

test("the microphone meter follows the fake microphone and drops to zero when muted", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${BASE}/meter-check`);
  const meter = page.getByRole("meter", { name: "Microphone level" });
  // Chromium's fake microphone beeps: the level must rise well above silence.
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=mic-level]").getAttribute("aria-valuenow")) > 10, null, { timeout: 10000 });
  await page.getByRole("button", { name: "Mute microphone" }).click();
  // A disabled track is silence: the analyser reads zero.
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=mic-level]").getAttribute("aria-valuenow")) === 0, null, { timeout: 5000 });
  assert.equal(await meter.getAttribute("aria-valuenow"), "0");
});

test("device pickers list the cameras and microphones, and switching keeps the preview live", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${BASE}/device-check`);
  await page.waitForFunction(() => document.querySelector("[data-testid=preview]")?.videoWidth > 0, null, { timeout: 15000 });
  const cams = page.getByLabel("Camera", { exact: true }).locator("option");
  const mics = page.getByLabel("Microphone", { exact: true }).locator("option");
  await cams.first().waitFor({ state: "attached" });
  const micLabels = await mics.allTextContents();
  assert.ok((await cams.count()) >= 1);
  assert.ok(micLabels.length >= 1 && micLabels.every((l) => l.length > 0), JSON.stringify(micLabels));
  const last = await mics.last().getAttribute("value");
  await page.getByLabel("Microphone", { exact: true }).selectOption(last);
  // The new stream uses the chosen microphone, the preview plays, the meter moves.
  await page.waitForFunction(
    (id) => document.querySelector("[data-testid=preview]").srcObject?.getAudioTracks()[0]?.getSettings().deviceId === id,
    last,
    { timeout: 10000 },
  );
  await page.waitForFunction(() => document.querySelector("[data-testid=preview]").videoWidth > 0, null, { timeout: 10000 });
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=mic-level]").getAttribute("aria-valuenow")) > 10, null, { timeout: 10000 });
});
