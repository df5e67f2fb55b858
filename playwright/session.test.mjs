// A call survives what happens to its signaling: the room's Durable Object restarting mid-meeting
// (everything it had in memory gone, every socket dropped), and the room token it joined with
// expiring (a socket drop after that reconnects with the fresh token the room sent).
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE } from "./browser.mjs";
import { joinAs as joinAsIn, tile, idOf, until } from "./call.mjs";

const browser = browserForFile();
const joinAs = (name, room) => joinAsIn(browser.context, BASE, name, room);

/** Until `page` has decoded ten more frames of `from`'s video than now. */
async function keepsDecoding(page, fromId, what) {
  const key = `${fromId}-video`;
  const s = await until(page, `${what}: decoding`, (s) => s[key]?.framesDecoded > 0, 15000);
  await until(page, `${what}: frames rising`, (n) => n[key].framesDecoded > s[key].framesDecoded + 10);
}

test("the room's object restarts mid-meeting: members, host and media come back, and the room goes on", async () => {
  const room = `restart-${Math.random().toString(36).slice(2, 8)}`;
  const ada = await joinAs("Ada", room);
  const bob = await joinAs("Bob", room);
  const adaId = await idOf(bob, "Ada");
  const bobId = await idOf(ada, "Bob");
  await keepsDecoding(ada, bobId, "Ada sees Bob");
  await keepsDecoding(bob, adaId, "Bob sees Ada");
  for (const p of [ada, bob]) await p.evaluate(() => (window.edgemeetPc.__before = true));

  // Reset the room's object, as a runtime restart or an eviction would: its memory and sockets go.
  await fetch(`${BASE}/api/dev/rooms/${room}/evict`, { method: "POST", body: JSON.stringify({ mode: "restart" }) });

  // Both reconnect and resume: same members, same host, the same media sessions still flowing.
  for (const p of [ada, bob]) {
    await p.getByTestId("room-status").getByText("2 in the room").waitFor({ timeout: 10000 });
    await p.getByTestId("room-status").getByText("Reconnecting…").waitFor({ state: "hidden", timeout: 10000 });
  }
  await tile(bob, "Ada").getByText("Host", { exact: true }).waitFor({ timeout: 5000 });
  for (const p of [ada, bob]) assert.equal(await p.evaluate(() => window.edgemeetPc.__before === true), true, "same PeerConnection");
  await keepsDecoding(ada, bobId, "Ada still sees Bob");
  await keepsDecoding(bob, adaId, "Bob still sees Ada");

  // The restored room still runs the call: a newcomer's media reaches both (the SFU's offers go
  // through the room), and theirs reaches the newcomer.
  const cy = await joinAs("Cy", room);
  const cyId = await idOf(ada, "Cy");
  await keepsDecoding(ada, cyId, "Ada sees Cy");
  await keepsDecoding(bob, cyId, "Bob sees Cy");
  await keepsDecoding(cy, adaId, "Cy sees Ada");
  assert.equal(await bob.getByTestId("toasts").getByText("Ada left").count(), 0);
  for (const p of [ada, bob, cy]) await p.close();
});

test("a call outlives its first room token: after it expires, a dropped socket reconnects with the fresh one", async () => {
  const room = `token-${Math.random().toString(36).slice(2, 8)}`;
  const TTL = 15;
  // Ada's join asks for a 15 s token (a dev-only hook of the test stack); the room refreshes it
  // over her socket with a third of its lifetime left.
  const ada = await browser.context.newPage();
  await ada.route("**/api/rooms/*/join", (route) =>
    route.continue({ headers: { ...route.request().headers(), "x-edgemeet-dev-token-ttl": String(TTL) } }));
  const tokens = [];
  ada.on("websocket", (ws) =>
    ws.on("framereceived", (f) => {
      try {
        const m = JSON.parse(f.payload);
        if (m.type === "token") tokens.push(m.token);
      } catch {}
    }));
  const joined = ada.waitForResponse((r) => r.url().endsWith("/join"));
  await ada.goto(`${BASE}/${room}`);
  await ada.getByLabel("Your name").fill("Ada");
  await ada.getByRole("button", { name: "Join" }).click();
  const first = await (await joined).json();
  await ada.getByRole("group", { name: "Ada (you)" }).waitFor({ timeout: 10000 });
  const bob = await joinAs("Bob", room);
  const adaId = first.participant_id;
  const bobId = await idOf(ada, "Bob");
  await keepsDecoding(ada, bobId, "Ada sees Bob");
  await ada.evaluate(() => (window.edgemeetPc.__before = true));

  // Wait until the first token is past its expiry and the leeway (10 s): the edge refuses it now.
  const claims = JSON.parse(Buffer.from(first.token.split(".")[1], "base64url"));
  const expired = claims.exp * 1000 + 10_000 + 1_000;
  while (Date.now() < expired) await ada.waitForTimeout(250);
  assert.ok(tokens.length >= 1, "the room sent Ada a fresh token");
  const refused = await new Promise((resolve) => {
    const ws = new WebSocket(`${BASE.replace(/^http/, "ws")}${first.ws_url}`);
    ws.addEventListener("close", (e) => resolve(e.code));
  });
  assert.equal(refused, 4401, "the first token has expired");

  // Ada's socket drops (a network blip): she comes back on the fresh token, same session.
  await ada.evaluate(() => window.edgemeetWs.close(4001, "test: dropped"));
  await tile(bob, "Ada").getByText("Reconnecting…").waitFor({ state: "visible", timeout: 3000 });
  await tile(bob, "Ada").getByText("Reconnecting…").waitFor({ state: "hidden", timeout: 10000 });
  await ada.getByTestId("room-status").getByText("2 in the room").waitFor({ timeout: 5000 });
  assert.equal(await ada.evaluate(() => window.edgemeetPc.__before === true), true, "same PeerConnection");
  await keepsDecoding(ada, bobId, "Ada still sees Bob");
  await keepsDecoding(bob, adaId, "Bob still sees Ada");
  assert.equal(await bob.getByTestId("toasts").getByText("Ada left").count(), 0);
  for (const p of [ada, bob]) await p.close();
});
