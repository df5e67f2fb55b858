// Launches Debian's Chromium through playwright-core with fake camera and microphone.
import { before, after } from "node:test";
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
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

/** A made-up client address for the dev-only header: joins are rate-limited per address, and the
 *  tests stand in for many people on one machine. */
export function devAddr() {
  const b = () => Math.floor(Math.random() * 256);
  return `198.18.${b()}.${b()}`;
}

/** A fresh browser context (own profile dir) with camera and microphone allowed, as a client of its
 *  own address; `extraArgs` are added to Chromium's command line. */
export async function launch(extraArgs = []) {
  const userDataDir = mkdtempSync(join(tmpdir(), "edgemeet-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.EDGEMEET_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    permissions: ["camera", "microphone"],
    viewport: { width: 1280, height: 800 },
    extraHTTPHeaders: { "x-edgemeet-dev-addr": devAddr() },
  });
  return context;
}

/** One browser for the calling test file: opened before its tests, closed after. Use `.context`. */
export function browserForFile(extraArgs = []) {
  const holder = { context: null };
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    holder.context = await launch(extraArgs);
  });
  after(async () => {
    await holder.context?.close();
  });
  return holder;
}

/** A WAV file with a steady tone (16-bit mono 48 kHz): a fake microphone that "talks" without
 *  pauses (Chromium's default fake microphone beeps briefly once a second, which the SFU's speaker
 *  detection rightly ignores as a short sound). Returns its path. */
export function toneWav(seconds = 10, hz = 440, amplitude = 0.5) {
  const rate = 48000;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write("WAVEfmt ", 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * amplitude * 32767), 44 + i * 2);
  }
  const path = join(mkdtempSync(join(tmpdir(), "edgemeet-tone-")), "tone.wav");
  writeFileSync(path, buf);
  return path;
}
