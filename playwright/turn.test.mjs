// TURN: the edge hands time-limited coturn credentials to members of a room only; with iceTransportPolicy "relay" (as for
// someone behind a strict firewall) a call still works, through the stack's coturn.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE, devAddr } from "./browser.mjs";
import { joinAs, decoding } from "./call.mjs";

const browser = browserForFile();

test("the edge hands TURN credentials, valid for at most an hour, only to members of the room", async () => {
  const room = `turn-${Math.random().toString(36).slice(2, 8)}`;
  const joined = await fetch(`${BASE}/api/rooms/${room}/join`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-edgemeet-dev-addr": devAddr() },
    body: JSON.stringify({ name: "Ada" }),
  }).then((r) => r.json());
  // With the join: credentials for this member.
  assert.equal(joined.ice_servers.length, 1, JSON.stringify(joined));
  // Without a token, with another room's, or a forged one: none.
  for (const [headers, status] of [
    [{}, 401],
    [{ authorization: `Bearer ${joined.token}` }, 403, "other"],
    [{ authorization: `Bearer ${joined.token.slice(0, -4)}AAAA` }, 401],
  ]) {
    const other = status === 403 ? `${room}-x` : room;
    const res = await fetch(`${BASE}/api/rooms/${other}/ice-servers`, { headers });
    assert.equal(res.status, status, JSON.stringify(headers));
    const body = await res.json();
    assert.ok(body.code && body.message, JSON.stringify(body));
  }
  // The old open route is gone.
  assert.equal((await fetch(`${BASE}/api/ice-servers`)).status, 404);
  const res = await fetch(`${BASE}/api/rooms/${room}/ice-servers`, { headers: { authorization: `Bearer ${joined.token}` } });
  assert.equal(res.status, 200);
  const { ice_servers } = await res.json();
  assert.equal(ice_servers.length, 1);
  const [s] = ice_servers;
  assert.ok(s.urls.some((u) => /^turn:.*transport=udp$/.test(u)), JSON.stringify(s.urls));
  assert.ok(s.urls.some((u) => /^turn:.*transport=tcp$/.test(u)), JSON.stringify(s.urls));
  const expiry = Number(s.username.split(":")[0]);
  const left = expiry - Date.now() / 1000;
  assert.ok(left > 3500 && left <= 3601, `credential valid for ${left} s`);
  assert.match(s.credential, /^[A-Za-z0-9+/]{27}=$/, "base64 of an HMAC-SHA1");
});

test("with iceTransportPolicy relay, two pages meet through coturn", async () => {
  await browser.context.addInitScript(() => {
    const PC = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends PC {
      constructor(config = {}) {
        super({ ...config, iceTransportPolicy: "relay" });
      }
    };
  });
  const room = `relay-${Math.random().toString(36).slice(2, 8)}`;
  const pages = [await joinAs(browser.context, BASE, "Ada", room), await joinAs(browser.context, BASE, "Bob", room)];
  for (const p of pages) {
    const deadline = Date.now() + 15000;
    while ((await decoding(p)) < 1) {
      assert.ok(Date.now() < deadline, "remote video decodes through the relay");
      await p.waitForTimeout(100);
    }
    const kind = await p.evaluate(async () => {
      const stats = [...(await window.edgemeetPc.getStats()).values()];
      const pair = stats.find((s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded");
      return stats.find((s) => s.id === pair?.localCandidateId)?.candidateType;
    });
    assert.equal(kind, "relay", "the media path goes through TURN");
  }
  for (const p of pages) await p.close();
});
