// Floods against the real edge in workerd: a join flood from one address is refused with 429 and
// Retry-After while other people's joins stay fast and the room is unharmed; a socket that floods
// the room with frames is throttled, then closed, and nobody else notices.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, connect, join, room, newAddr } from "./helpers.mjs";

const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.95))];

test("a join flood from one address is refused with 429 and Retry-After; others still get in fast", async () => {
  const r = room();
  const host = await join(r, "Host");
  assert.equal(host.status, 200);
  const ws = connect(host.body.ws_url);
  await ws.next((f) => f.type === "snapshot", "host in");
  const flooder = newAddr();
  // 200 joins a second from one address for 10 s (bounded: 2,000 requests), while other people
  // (each their own address) join every 200 ms.
  const statuses = [];
  let retryAfter = 0;
  const others = [];
  const started = Date.now();
  const flood = (async () => {
    const inFlight = [];
    for (let i = 0; i < 2000; i++) {
      const due = started + i * 5;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((res) => setTimeout(res, wait));
      inFlight.push(
        fetch(`${BASE}/api/rooms/${r}/join`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-edgemeet-dev-addr": flooder },
          body: JSON.stringify({ name: `F${i}` }),
        }).then(async (res) => {
          statuses.push(res.status);
          if (res.status === 429 && Number(res.headers.get("retry-after")) > 0) retryAfter++;
          await res.arrayBuffer();
        }),
      );
    }
    await Promise.all(inFlight);
  })();
  const people = (async () => {
    for (let i = 0; i < 50; i++) {
      const t = Date.now();
      const j = await join(r, `Person ${i}`);
      assert.equal(j.status, 200, JSON.stringify(j.body));
      others.push(Date.now() - t);
      await new Promise((res) => setTimeout(res, 200));
    }
  })();
  await Promise.all([flood, people]);
  const refused = statuses.filter((s) => s === 429).length;
  const rate = refused / statuses.length;
  console.log(
    `join flood: ${statuses.length} joins from one address in ${((Date.now() - started) / 1000).toFixed(1)} s, ${(rate * 100).toFixed(1)} % refused (429), ${retryAfter} with Retry-After; others' joins p95 ${p95(others)} ms`,
  );
  assert.equal(statuses.length, 2000);
  assert.ok(rate >= 0.95, `only ${(rate * 100).toFixed(1)} % refused`);
  assert.equal(retryAfter, refused, "every 429 says when to come back");
  assert.ok(p95(others) < 2000, `others' joins p95 ${p95(others)} ms`);
  // The room is unharmed: the host is still in and hosting, and a newcomer sees just the two.
  const late = await join(r, "Late");
  const lws = connect(late.body.ws_url);
  const snap = await lws.next((f) => f.type === "snapshot", "late in");
  assert.deepEqual(
    snap.room.participants.map((p) => p.name).sort(),
    ["Host", "Late"],
  );
  assert.equal(snap.room.host, host.body.participant_id);
  // And the refusal is in words.
  const again = await fetch(`${BASE}/api/rooms/${r}/join`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-edgemeet-dev-addr": flooder },
    body: JSON.stringify({ name: "F" }),
  });
  if (again.status === 429) {
    const body = await again.json();
    assert.equal(body.code, "too_many_requests");
    assert.match(body.message, /Try again in \d+ s/);
  }
});

test("a socket sending 1,000 frames a second is throttled, then closed; the others are unaffected", async () => {
  const r = room();
  const a = await join(r, "Ada");
  const b = await join(r, "Bo");
  const wa = connect(a.body.ws_url);
  const wb = connect(b.body.ws_url);
  await wa.next((f) => f.type === "snapshot", "Ada in");
  await wb.next((f) => f.type === "snapshot", "Bo in");
  const started = Date.now();
  let sent = 0;
  for (let i = 0; i < 1000 && wb.ws.readyState === WebSocket.OPEN; i++) {
    wb.ws.send(JSON.stringify({ type: "ping", nonce: i }));
    sent++;
    if (i % 10 === 9) await new Promise((res) => setTimeout(res, 10));
  }
  const throttled = await wb.next((f) => f.type === "error" && f.code === "too_many_requests", "throttled");
  assert.match(throttled.message, /Slow down/);
  const last = await wb.next((f) => f.type === "error" && /closed/.test(f.message), "the closing word");
  assert.equal(last.code, "too_many_requests");
  const { code } = await wb.closed;
  console.log(`frame flood: closed with ${code} after ${sent} frames in ${Date.now() - started} ms`);
  assert.equal(code, 1008);
  // Ada is answered as usual.
  wa.ws.send(JSON.stringify({ type: "ping", nonce: 7 }));
  const pong = await wa.next((f) => f.type === "pong", "Ada's pong");
  assert.equal(pong.nonce, 7);
});

test("coturn relays only to the SFUs' media address: not to the edge, itself, or any other address", async () => {
  const python = process.env.EDGEMEET_PYTHON;
  assert.ok(python, "run through `cargo xtask test` (EDGEMEET_PYTHON: the venv with aioice)");
  const j = await join(room(), "Ada");
  assert.equal(j.status, 200);
  const [server] = j.body.ice_servers;
  const url = server.urls.find((u) => u.endsWith("transport=udp"));
  const [, host, port] = url.match(/^turn:([^:?]+):(\d+)/);
  const edge = new URL(BASE);
  const peers = {
    "127.0.0.2:40000": "allowed", // an SFU's media port
    [`127.0.0.1:${edge.port}`]: "refused", // the edge
    [`127.0.0.1:${port}`]: "refused", // coturn itself
    "127.0.0.3:40000": "refused", // another loopback address
    "10.0.0.1:80": "refused",
    "169.254.169.254:80": "refused", // cloud metadata
  };
  const { execFile } = await import("node:child_process");
  const out = await new Promise((resolve, reject) =>
    execFile(python, [new URL("./turn_peers.py", import.meta.url).pathname, host, port, server.username, server.credential, ...Object.keys(peers)], { timeout: 60000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const got = JSON.parse(out);
  console.log(`TURN peers: ${JSON.stringify(got)}`);
  for (const [peer, want] of Object.entries(peers)) {
    assert.ok(got[peer].startsWith(want), `${peer}: ${got[peer]}, want ${want}`);
  }
  // A refusal is coturn's 403 (Forbidden IP), not a timeout.
  assert.match(got[`127.0.0.1:${edge.port}`], /^refused 403/);
});
