// Edge integration tests: the built worker running in workerd (wrangler dev, started by
// `cargo xtask test`), with real HTTP and WebSocket clients. EDGEMEET_URL points at it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { BASE, sign, join, connect, room, droppableSocket, FRANKFURT, SINGAPORE } from "./helpers.mjs";

test("health lists the three dev regions as live", async () => {
  const res = await fetch(`${BASE}/api/health`);
  assert.equal(res.status, 200);
  const h = await res.json();
  assert.equal(h.status, "ok");
  assert.equal(h.live_sfus, 3);
  assert.deepEqual(h.sfus.map((s) => s.region).sort(), ["ap-south", "eu-west", "us-east"]);
  for (const s of h.sfus) {
    assert.equal(s.healthy, true);
    assert.ok(s.last_seen_ms_ago < 6000, `${s.id} seen ${s.last_seen_ms_ago} ms ago`);
    assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  }
});

test("heartbeats must be signed with the control secret", async () => {
  const body = JSON.stringify({
    id: "rogue", region: "x", url: "http://127.0.0.1:1", location: { lat: 0, lon: 0 },
    capacity: 10, load: { participants: 0, forwarded_bitrate_bps: 0, cpu: 0 }, draining: false, version: "t",
  });
  const post = (headers) => fetch(`${BASE}/api/sfu/heartbeat`, { method: "POST", headers, body });
  for (const headers of [{}, { "x-edgemeet-signature": sign(body, Date.now(), "wrong-secret-wrong-secret-wrong-secret") },
    { "x-edgemeet-signature": sign(body, Date.now() - 120_000) }, { "x-edgemeet-signature": "garbage" }]) {
    const res = await post(headers);
    assert.equal(res.status, 401, JSON.stringify(headers));
    assert.equal((await res.json()).code, "unauthorized");
  }
  const h = await (await fetch(`${BASE}/api/health`)).json();
  assert.ok(!h.sfus.some((s) => s.id === "rogue"), "an unsigned heartbeat must not register an SFU");
});

test("a signed but invalid heartbeat is refused with a reason", async () => {
  const body = JSON.stringify({
    id: "bad-loc", region: "x", url: "http://127.0.0.1:1", location: { lat: 123, lon: 0 },
    capacity: 10, load: { participants: 0, forwarded_bitrate_bps: 0, cpu: 0 }, draining: false, version: "t",
  });
  const res = await fetch(`${BASE}/api/sfu/heartbeat`, { method: "POST", headers: { "x-edgemeet-signature": sign(body) }, body });
  assert.equal(res.status, 400);
  const e = await res.json();
  assert.equal(e.code, "bad_request");
  assert.match(e.message, /latitude\/longitude/);
});

test("join validates room and display names", async () => {
  let r = await join("bad%20room");
  assert.equal(r.status, 400);
  assert.match(r.body.message, /letters, digits/);
  r = await join(room(), "   ");
  assert.equal(r.status, 400);
  assert.match(r.body.message, /Display name is empty/);
  const res = await fetch(`${BASE}/api/rooms/ok/join`, { method: "POST", body: "not json" });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).code, "bad_request");
});

test("two participants meet in a room over the signaling socket", async () => {
  const name = room();
  const a = await join(name, "Ada");
  assert.equal(a.status, 200);
  assert.match(a.body.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.equal(a.body.ws_url, `/api/rooms/${name}/ws?token=${a.body.token}`);
  const wa = connect(a.body.ws_url);
  await wa.opened;
  wa.send({ type: "hello", version: 1 });
  const snap = await wa.next((f) => f.type === "snapshot", "snapshot");
  assert.equal(snap.you, a.body.participant_id);
  assert.equal(snap.room.name, name);
  assert.deepEqual(snap.room.participants.map((p) => p.name), ["Ada"]);
  assert.equal(snap.room.host, a.body.participant_id, "the first joiner hosts");
  assert.equal(snap.room.participants[0].role, "host");

  const b = await join(name, "Grace");
  const wb = connect(b.body.ws_url);
  const joined = await wa.next((f) => f.type === "participant_joined", "participant_joined");
  assert.equal(joined.participant.name, "Grace");
  const snapB = await wb.next((f) => f.type === "snapshot", "B's snapshot");
  assert.deepEqual(snapB.room.participants.map((p) => p.name).sort(), ["Ada", "Grace"]);

  wb.send({ type: "set_media", audio_muted: true, video_muted: false });
  const media = await wa.next((f) => f.type === "media_changed", "media_changed");
  assert.deepEqual(media, { type: "media_changed", id: b.body.participant_id, audio_muted: true, video_muted: false });

  // Bad input gets an error frame and the connection stays usable.
  wa.send("this is not json");
  const err = await wa.next((f) => f.type === "error", "error frame");
  assert.equal(err.code, "bad_message");
  wa.send({ type: "hello", version: 99 });
  assert.equal((await wa.next((f) => f.type === "error", "version error")).code, "unsupported_version");
  wa.send({ type: "ping", nonce: 42 });
  assert.deepEqual(await wa.next((f) => f.type === "pong", "pong"), { type: "pong", nonce: 42 });

  // The host leaving hands the room to the other participant.
  const c = await join(name, "Linus");
  const wc = connect(c.body.ws_url);
  await wc.next((f) => f.type === "snapshot");
  wa.send({ type: "leave" });
  assert.equal((await wa.closed).code, 1000);
  assert.equal((await wb.next((f) => f.type === "host_changed", "host_changed")).id, b.body.participant_id);
  assert.equal((await wc.next((f) => f.type === "host_changed", "host_changed")).id, b.body.participant_id);
  wc.ws.close(1000);

  // Closing a socket counts as leaving.
  await wb.next((f) => f.type === "participant_left" && f.id === c.body.participant_id, "C left");
  wb.ws.close(1000);
  assert.equal((await wb.closed).code, 1000);
});

test("a room's SFU is the nearest healthy one to its first joiner, and stays the room's", async () => {
  const eu = room();
  const a = await join(eu, "Fritz", FRANKFURT);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.sfu.region, "eu-west");
  assert.match(a.body.sfu.reason, /nearest healthy SFU: \d+ km away/);
  assert.ok(a.body.sfu.distance_km < 50, `Frankfurt to eu-west: ${a.body.sfu.distance_km} km`);
  const asia = room();
  const s = await join(asia, "Siew", SINGAPORE);
  assert.equal(s.body.sfu.region, "ap-south");
  // The token carries the assignment.
  const claims = JSON.parse(Buffer.from(s.body.token.split(".")[1], "base64url"));
  assert.equal(claims.sfu, "ap-south");

  // Once someone is in the room, later joiners use the room's SFU wherever they are.
  const wa = connect(a.body.ws_url);
  const snap = await wa.next((f) => f.type === "snapshot");
  assert.equal(snap.room.sfu, "eu-west");
  const late = await join(eu, "Siew", SINGAPORE);
  assert.equal(late.body.sfu.id, "eu-west");
  wa.ws.close(1000);
  await wa.closed;
});

test("a dropped connection is away, not gone: it resumes within 10 s and leaves after", async () => {
  const name = room();
  const a = await join(name, "Observer");
  const wa = connect(a.body.ws_url);
  await wa.next((f) => f.type === "snapshot");
  const b = await join(name, "Flaky");
  let holder = await droppableSocket(b.body.ws_url);
  await wa.next((f) => f.type === "participant_joined" && f.participant.id === b.body.participant_id, "B joined");

  holder.kill("SIGKILL");
  assert.equal((await wa.next((f) => f.type === "participant_away", "B away")).id, b.body.participant_id);
  // Back within the grace period with the same token: the session resumes, nobody sees a leave or join.
  const wb = connect(b.body.ws_url);
  const snap = await wb.next((f) => f.type === "snapshot", "B's resumed snapshot");
  assert.equal(snap.you, b.body.participant_id);
  assert.equal((await wa.next((f) => f.type === "participant_back", "B back")).id, b.body.participant_id);
  wa.send({ type: "ping", nonce: 7 });
  await wa.next((f) => f.type === "pong");
  wb.ws.close(1000);
  assert.equal((await wa.next((f) => f.type === "participant_left", "B left on a clean close")).id, b.body.participant_id);

  // A drop that does not come back leaves once the grace period is over (the room's alarm).
  const c = await join(name, "Gone");
  holder = await droppableSocket(c.body.ws_url);
  await wa.next((f) => f.type === "participant_joined" && f.participant.id === c.body.participant_id, "C joined");
  const dropped = Date.now();
  holder.kill("SIGKILL");
  await wa.next((f) => f.type === "participant_away" && f.id === c.body.participant_id, "C away");
  const left = await wa.next((f) => f.type === "participant_left" && f.id === c.body.participant_id, "C left", 20000);
  const after = Date.now() - dropped;
  assert.ok(left && after >= 9000, `C left ${after} ms after dropping; the grace period is 10 s`);
  wa.ws.close(1000);
});

test("frames over 64 KiB close the socket with 1009", async () => {
  const a = await join(room());
  const w = connect(a.body.ws_url);
  await w.next((f) => f.type === "snapshot");
  w.send(JSON.stringify({ type: "ping", nonce: 1, pad: "x".repeat(70 * 1024) }));
  assert.equal((await w.closed).code, 1009);
});

test("bad tokens are refused with 4401, other rooms' tokens with 4403", async () => {
  const name = room();
  const a = await join(name);
  const cases = [
    [`/api/rooms/${name}/ws?token=garbage`, 4401],
    [`/api/rooms/${name}/ws`, 4401],
    [`/api/rooms/${name}/ws?token=${a.body.token.slice(0, -3)}abc`, 4401],
    [`/api/rooms/${name}-other/ws?token=${a.body.token}`, 4403],
  ];
  // alg=none with the real claims
  const [, payload] = a.body.token.split(".");
  const none = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
  cases.push([`/api/rooms/${name}/ws?token=${none}.${payload}.`, 4401]);
  for (const [path, code] of cases) {
    const w = connect(path);
    const e = await w.next((f) => f.type === "error", `error for ${path}`);
    assert.ok(["unauthorized", "forbidden"].includes(e.code), JSON.stringify(e));
    assert.equal((await w.closed).code, code, path);
  }
});

test("a plain GET on the socket route asks for an upgrade; unknown API routes are JSON 404s", async () => {
  let res = await fetch(`${BASE}/api/rooms/x/ws`);
  assert.equal(res.status, 400);
  assert.match((await res.json()).message, /WebSocket upgrade/);
  res = await fetch(`${BASE}/api/nope`);
  assert.equal(res.status, 404);
  assert.equal((await res.json()).code, "not_found");
});

test("the client app is served at / and at any room path", async () => {
  for (const path of ["/", "/some-room"]) {
    const res = await fetch(`${BASE}${path}`);
    assert.equal(res.status, 200, path);
    const html = await res.text();
    assert.match(html, /<title>edgemeet<\/title>/);
    const wasm = html.match(/edgemeet-client-[0-9a-f]+_bg\.wasm/);
    assert.ok(wasm, "index.html references the client wasm");
    const w = await fetch(`${BASE}/${wasm[0]}`);
    assert.equal(w.status, 200);
    assert.equal(w.headers.get("content-type"), "application/wasm");
  }
});

test("session descriptions: garbage is refused to its sender only, an unusable one gets the SFU's error, the socket stays open", async () => {
  const r = room();
  const a = await join(r, "Ada");
  const b = await join(r, "Bob");
  const ada = connect(a.body.ws_url);
  const bob = connect(b.body.ws_url);
  await ada.next((f) => f.type === "snapshot");
  await bob.next((f) => f.type === "snapshot");

  // Not SDP at all: the edge refuses it without bothering the SFU.
  ada.send({ type: "offer", sdp: "hello" });
  const e1 = await ada.next((f) => f.type === "error", "bad_sdp error");
  assert.equal(e1.code, "bad_sdp");

  // Looks like SDP, but the SFU cannot answer it (no ICE credentials, no fingerprint): its error
  // comes back to Ada through the room, with the SFU's code.
  ada.send({ type: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n" });
  const e2 = await ada.next((f) => f.type === "error", "SFU error", 8000);
  assert.ok(["bad_sdp", "media_server_error"].includes(e2.code), JSON.stringify(e2));

  // An answer when no offer is waiting.
  ada.send({ type: "answer", sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" });
  assert.equal((await ada.next((f) => f.type === "error")).code, "bad_message");

  // Still connected and working; Bob (whose ping the room handles after all of the above) got
  // none of Ada's errors.
  ada.send({ type: "ping", nonce: 5 });
  assert.equal((await ada.next((f) => f.type === "pong")).nonce, 5);
  bob.send({ type: "ping", nonce: 6 });
  await bob.next((f) => f.type === "pong");
  assert.deepEqual(bob.frames.filter((f) => f.type === "error"), []);
});

test("SFU offers for a participant must be signed", async () => {
  const body = JSON.stringify({ room: "x", participant: "y", sdp: "v=0" });
  const unsigned = await fetch(`${BASE}/api/sfu/signal`, { method: "POST", body });
  assert.equal(unsigned.status, 401);
  const t = Date.now();
  const mac = createHmac("sha256", "not-the-secret").update(`${t}\nPOST\n/api/sfu/signal\n${body}`).digest("hex");
  const forged = await fetch(`${BASE}/api/sfu/signal`, { method: "POST", body, headers: { "x-edgemeet-signature": `t=${t},v1=${mac}` } });
  assert.equal(forged.status, 401);
});
