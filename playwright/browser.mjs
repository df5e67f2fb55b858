// Launches Debian's Chromium through playwright-core with fake camera and microphone.
import { before, after } from "node:test";
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BASE = process.env.EDGEMEET_URL;
export const ARTIFACTS = process.env.EDGEMEET_ARTIFACTS || join(tmpdir(), "edgemeet-playwright");

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

/** A fresh browser context (own profile dir) with camera and microphone allowed. */
export async function launch() {
  const userDataDir = mkdtempSync(join(tmpdir(), "edgemeet-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.EDGEMEET_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    permissions: ["camera", "microphone"],
    viewport: { width: 1280, height: 800 },
  });
  return context;
}

/** One browser for the calling test file: opened before its tests, closed after. Use `.context`. */
export function browserForFile() {
  const holder = { context: null };
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    holder.context = await launch();
  });
  after(async () => {
    await holder.context?.close();
  });
  return holder;
}
