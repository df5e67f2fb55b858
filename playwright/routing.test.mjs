// End to end: browsers in different places land on their nearest region. Geography is faked with
// the dev-only location header, which only the local stack honours (a deployed worker ignores it;
// see shared/src/region.rs tests).
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE } from "./browser.mjs";

const browser = browserForFile();

async function joinFrom(location, room) {
  const page = await browser.context.newPage();
  await page.setExtraHTTPHeaders({ "x-edgemeet-dev-location": location });
  await page.goto(`${BASE}/${room}`);
  await page.getByLabel("Your name").fill("Traveller");
  await page.getByRole("button", { name: "Join" }).click();
  const status = page.getByTestId("room-status");
  await status.getByText("in the room").waitFor({ timeout: 10000 });
  return { page, text: await status.textContent() };
}

test("a browser in Europe and one in Asia each create a room on their nearest SFU", async () => {
  const suffix = Math.random().toString(36).slice(2, 8);
  const eu = await joinFrom("50.11,8.68", `fra-${suffix}`);
  assert.match(eu.text, /media via eu-west/);
  const asia = await joinFrom("1.29,103.85", `sin-${suffix}`);
  assert.match(asia.text, /media via ap-south/);
  // Joining the European room from Asia keeps the room on eu-west.
  const visitor = await joinFrom("1.29,103.85", `fra-${suffix}`);
  assert.match(visitor.text, /2 in the room · media via eu-west/);
});
