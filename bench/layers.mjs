// Same upload, different downloads: one publisher, one viewer showing it big (speaker view) and one
// showing it as a thumbnail (160×90). Prints what each received from the publisher's camera over
// 30 s (bytes, bitrate, resolution). Not a pass/fail test. Run by `cargo xtask bench`.
import { launch } from "../playwright/browser.mjs";
import { joinAs, press } from "../playwright/call.mjs";

const BASE = process.env.EDGEMEET_URL;
const SECONDS = Number(process.env.EDGEMEET_BENCH_SECONDS || 30);
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask bench`)");

const context = await launch();

async function camera(page, publisher) {
  return page.evaluate(async (publisher) => {
    const track = document
      .querySelector(`video[data-publisher="${publisher}"][data-source="camera"]`)
      ?.srcObject?.getVideoTracks?.()[0];
    let out = null;
    (await window.edgemeetPc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.trackIdentifier === track?.id) {
        out = { bytes: s.bytesReceived, ts: s.timestamp, w: s.frameWidth, h: s.frameHeight, frames: s.framesDecoded };
      }
    });
    return out;
  }, publisher);
}

const room = `bench-layers-${Math.random().toString(36).slice(2, 8)}`;
const pub = await joinAs(context, BASE, "Publisher", room);
const full = await joinAs(context, BASE, "Full", room);
const thumb = await joinAs(context, BASE, "Thumb", room);
try {
  const id = await full.getByRole("group", { name: "Publisher", exact: true }).getAttribute("data-participant");
  await press(full, "Speaker view");
  await thumb.getByRole("group", { name: "Publisher", exact: true }).evaluate((el) => {
    el.style.cssText = "width:160px;height:90px;aspect-ratio:auto;grid-column:auto";
  });
  // Let both settle on their layer (Chrome ramps its bandwidth estimate; upgrades wait 1.5 s).
  const deadline = Date.now() + 30000;
  for (;;) {
    const f = await camera(full, id);
    const t = await camera(thumb, id);
    if ((f?.w === 1280 && t?.w <= 320 && t?.w > 0) || Date.now() > deadline) break;
    await full.waitForTimeout(250);
  }
  const a = [await camera(full, id), await camera(thumb, id)];
  await full.waitForTimeout(SECONDS * 1000);
  const b = [await camera(full, id), await camera(thumb, id)];
  console.log(`\n  Publisher's camera as received over ${SECONDS} s (one upload, simulcast q/h/f):`);
  console.log("  | viewer | tile | received | bytes | kbps | frames/s |");
  console.log("  |---|---|---|---|---|---|");
  const rows = [];
  for (const [i, name, size] of [[0, "Full", "speaker view, ~490 px tall"], [1, "Thumb", "160×90"]]) {
    const bytes = b[i].bytes - a[i].bytes;
    const secs = (b[i].ts - a[i].ts) / 1000;
    rows.push(bytes);
    console.log(
      `  | ${name} | ${size} | ${b[i].w}×${b[i].h} | ${bytes} | ${((bytes * 8) / secs / 1000).toFixed(0)} | ${((b[i].frames - a[i].frames) / secs).toFixed(1)} |`,
    );
  }
  console.log(`  thumbnail / full bytes: ${(rows[1] / rows[0]).toFixed(3)}`);
} finally {
  await context.close();
}
