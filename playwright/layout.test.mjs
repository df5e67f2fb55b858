// The room page fits the screen: at 1280×800 and on a 390×844 phone, with 1, 3 and 6 people, with
// each side panel open in turn. Every control of the bar is inside the viewport and is the element
// at its own centre (nothing covers it), the page never scrolls sideways, every tile shown is
// inside the stage, and an open panel's close button is reachable. Screenshots of every case go
// to the test artifacts. The other participants join over the signaling socket only (no media):
// this is about where things go, not about video.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { browserForFile, BASE, ARTIFACTS, devAddr } from "./browser.mjs";
import { press } from "./call.mjs";

const browser = browserForFile();
const sockets = [];
after(() => sockets.forEach((ws) => ws.close(1000)));

/** A participant without media: joins over the API and holds the room socket open. */
async function joinWithoutMedia(room, name) {
  const res = await fetch(`${BASE}/api/rooms/${room}/join`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-edgemeet-dev-addr": devAddr() },
    body: JSON.stringify({ name }),
  });
  const body = await res.json();
  const ws = new WebSocket(`${BASE.replace(/^http/, "ws")}${body.ws_url}`);
  sockets.push(ws);
  await new Promise((resolve, reject) => {
    ws.addEventListener("message", (e) => JSON.parse(e.data).type === "snapshot" && resolve());
    ws.addEventListener("error", reject);
  });
  return ws;
}

/** Everything the checks need, measured in the page. */
function measure(page) {
  return page.evaluate(() => {
    const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
    const box = (el) => {
      const r = el.getBoundingClientRect();
      return { x: r.x, y: r.y, w: r.width, h: r.height, right: r.right, bottom: r.bottom };
    };
    const atCentre = (el) => {
      const r = el.getBoundingClientRect();
      const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
      return hit === el || el.contains(hit);
    };
    const bar = document.querySelector("nav.controls");
    const controls = [...bar.querySelectorAll("button")]
      .filter((b) => shown(b) && !b.closest("#more-actions"))
      .map((b) => ({ name: b.getAttribute("aria-label") || b.textContent.trim(), box: box(b), atCentre: atCentre(b) }));
    const stage = document.querySelector("section.stage");
    const tiles = [...stage.querySelectorAll(".tile")].filter(shown).map((t) => ({ name: t.getAttribute("aria-label"), box: box(t) }));
    const panel = document.querySelector("aside.panel");
    const close = panel && shown(panel) ? panel.querySelector("button.close") : null;
    return {
      viewport: { w: innerWidth, h: innerHeight },
      scrollWidth: document.documentElement.scrollWidth,
      scrollHeight: document.documentElement.scrollHeight,
      controls,
      stage: box(stage),
      tiles,
      panel: panel && shown(panel) ? { box: box(panel), closeAtCentre: close ? atCentre(close) : false } : null,
    };
  });
}

function check(m, label, people, filmstrip = false) {
  const { w, h } = m.viewport;
  assert.ok(m.scrollWidth <= w, `${label}: the page scrolls sideways (${m.scrollWidth} > ${w})`);
  assert.ok(m.scrollHeight <= h, `${label}: the page scrolls down (${m.scrollHeight} > ${h})`);
  assert.ok(m.controls.length >= 4, `${label}: only ${m.controls.length} controls shown`);
  for (const c of m.controls) {
    const b = c.box;
    assert.ok(b.x >= 0 && b.y >= 0 && b.right <= w + 0.5 && b.bottom <= h + 0.5, `${label}: ${c.name} is outside the viewport ${JSON.stringify(b)}`);
    assert.ok(c.atCentre, `${label}: something covers ${c.name}`);
  }
  assert.equal(m.tiles.length > 0, true, `${label}: no tile shown`);
  const s = m.stage;
  for (const t of m.tiles) {
    const b = t.box;
    assert.ok(
      b.x >= s.x - 0.5 && b.y >= s.y - 0.5 && b.right <= s.right + 0.5 && b.bottom <= s.bottom + 0.5,
      `${label}: tile ${t.name} ${JSON.stringify(b)} is outside the stage ${JSON.stringify(s)}`,
    );
    assert.ok(b.w >= 100, `${label}: tile ${t.name} is only ${b.w} px wide`);
  }
  // Everyone is on the stage (on one page here: six fit both screens), or in the filmstrip: shown,
  // or counted in its "+N" tile.
  const shown = m.tiles.filter((t) => t.name && !t.name.endsWith("not shown"));
  const more = m.tiles.map((t) => /^(\d+) more not shown$/.exec(t.name ?? "")).find(Boolean);
  const counted = shown.length + (filmstrip && more ? Number(more[1]) : 0);
  assert.equal(counted, people, `${label}: ${m.tiles.map((t) => t.name)}`);
}

/** Presses a control of the bar (through More when it is there). */
const choose = (page, name) => press(page, name);

/** Opens `panel` ("Participants", "Chat", "Meeting settings", "Stats") the way a person would on this screen. */
async function openPanel(page, panel) {
  await press(page, panel);
  await page.locator("aside.panel").waitFor({ state: "visible", timeout: 2000 });
}

for (const [w, h] of [[1280, 800], [390, 844]]) {
  const phone = w < 700;
  test(`the room page fits ${w}×${h} with 1, 3 and 6 people and each panel open`, async () => {
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: w, height: h });
    const room = `layout-${w}-${Math.random().toString(36).slice(2, 8)}`;
    await page.goto(`${BASE}/${room}`);
    await page.getByLabel("Your name").fill("Me");
    await page.getByRole("button", { name: "Join" }).click();
    await page.getByRole("group", { name: "Me (you)" }).waitFor({ timeout: 10000 });
    let people = 1;
    for (const n of [1, 3, 6]) {
      while (people < n) {
        await joinWithoutMedia(room, `Guest ${people}`);
        people += 1;
      }
      await page.getByTestId("room-status").getByText(`${n} in the room`).waitFor({ timeout: 5000 });
      for (const panel of [null, "Participants", "Chat", "Polls", "Breakout rooms", "Meeting settings", "Stats", "Speaker view"]) {
        const speaker = panel === "Speaker view";
        if (speaker) await choose(page, "Speaker view");
        else if (panel) await openPanel(page, panel);
        await page.waitForTimeout(250); // tiles move with a 150 ms transition
        const label = `${w}×${h}, ${n} people, ${panel ?? "no panel"}`;
        await page.screenshot({ path: join(ARTIFACTS, `layout-${w}x${h}-${n}-${panel ?? "none"}.png`) });
        const m = await measure(page);
        check(m, label, n, speaker);
        if (speaker) {
          // One tile big (someone else: alone, there is nobody to feature), the rest in the
          // filmstrip under it.
          const big = m.tiles.reduce((a, t) => (t.box.w * t.box.h > a.box.w * a.box.h ? t : a));
          if (n > 1) {
            assert.notEqual(big.name, "Me (you)", `${label}: the featured tile is someone else`);
            assert.ok(big.box.w >= m.stage.w - 1, `${label}: the featured tile spans the stage`);
          }
          await choose(page, "Grid view");
        } else if (panel) {
          assert.ok(m.panel, `${label}: the panel is not shown`);
          assert.ok(m.panel.closeAtCentre, `${label}: the panel's close button is covered`);
          if (!phone) {
            // Beside the stage, not over it.
            assert.ok(m.panel.box.x >= m.stage.right, `${label}: the panel covers the stage`);
          }
          await page.locator("aside.panel").getByRole("button", { name: /^Close/ }).click();
          await page.locator("aside.panel").waitFor({ state: "hidden", timeout: 2000 });
        }
      }
    }
    await page.close();
  });
}

test("every control is reachable with the keyboard", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${BASE}/keys-${Math.random().toString(36).slice(2, 8)}`);
  await page.getByLabel("Your name").fill("Keys");
  await page.getByRole("button", { name: "Join" }).click();
  await page.getByRole("group", { name: "Keys (you)" }).waitFor({ timeout: 10000 });
  const want = ["Mute microphone", "Turn camera off", "Share screen", "Raise hand", "React", "Chat", "Participants", "More", "Leave"];
  const reached = new Set();
  for (let i = 0; i < 30 && reached.size < want.length; i++) {
    await page.keyboard.press("Tab");
    const name = await page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? document.activeElement?.textContent?.trim());
    if (want.includes(name)) reached.add(name);
  }
  assert.deepEqual([...reached].sort(), [...want].sort());
  // The participants panel opens from the keyboard with focus in it, Escape closes it, and focus
  // goes back to the button that opened it.
  const active = () =>
    page.evaluate(() => {
      const el = document.activeElement;
      return el?.id || el?.getAttribute("aria-label") || el?.textContent.trim();
    });
  await page.getByRole("button", { name: "Participants", exact: true }).focus();
  await page.keyboard.press("Enter");
  const panel = page.locator("aside.panel");
  await panel.waitFor({ state: "visible", timeout: 2000 });
  await page.waitForFunction(() => document.activeElement?.id === "panel-title", null, { timeout: 2000 });
  await panel.getByRole("button", { name: "Close participants" }).focus();
  await page.keyboard.press("Escape");
  await panel.waitFor({ state: "hidden", timeout: 2000 });
  assert.equal(await active(), "Participants");
  // On a phone the same goes through "More": Escape closes the list and focus stays on "More".
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("button", { name: "More" }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#more-actions").getByRole("button", { name: "Stats" }).focus();
  await page.keyboard.press("Escape");
  await page.locator("#more-actions").waitFor({ state: "hidden", timeout: 2000 });
  assert.equal(await active(), "More");
  // A panel opened from the list gives focus back to "More" when it closes.
  await page.keyboard.press("Enter");
  await page.locator("#more-actions").getByRole("button", { name: "Participants" }).click();
  await panel.waitFor({ state: "visible", timeout: 2000 });
  await panel.getByRole("button", { name: "Close participants" }).click();
  await panel.waitFor({ state: "hidden", timeout: 2000 });
  assert.equal(await active(), "More");
  await page.close();
});
