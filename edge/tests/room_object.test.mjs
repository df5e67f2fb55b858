// The Room Durable Object in workerd: what must survive the object being evicted or restarted, the
// room moving on SFU drain notices, and room tokens refreshed over the socket.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, join, connect, room, droppableSocket, signedPost } from "./helpers.mjs";

const SDP = "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=held\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

async function evict(name, mode) {
  const res = await fetch(`${BASE}/api/dev/rooms/${name}/evict`, { method: "POST", body: JSON.stringify({ mode }) });
  // A restart resets the object while it answers: the request itself may fail.
  if (mode === "memory") assert.equal(res.status, 200, await res.text());
}

async function health() {
  return (await fetch(`${BASE}/api/health`)).json();
}

test("an SFU offer held for a member who is away survives the object's eviction and restart", async () => {
  const name = room();
  const a = await join(name, "Ada");
  const wa = connect(a.body.ws_url);
  await wa.next((f) => f.type === "snapshot");
  const b = await join(name, "Bob");
  const holder = await droppableSocket(b.body.ws_url);
  await wa.next((f) => f.type === "participant_joined", "Bob joined");
  holder.kill("SIGKILL");
  await wa.next((f) => f.type === "participant_away", "Bob away");

  // The SFU offers Bob something (tracks came) while he is away: the room holds it for him,
  // with its number (which his answer echoes).
  const res = await signedPost("/api/sfu/signal", { room: name, participant: b.body.participant_id, sdp: SDP, generation: 3 });
  assert.equal(res.status, 204);

  // The object loses everything it had in memory (as when it is evicted while sockets hibernate).
  await evict(name, "memory");
  wa.send({ type: "ping", nonce: 1 });
  await wa.next((f) => f.type === "pong", "Ada's socket still works");

  // Bob comes back: same session, and the offer the SFU made while he was gone.
  const wb = connect(b.body.ws_url);
  const snap = await wb.next((f) => f.type === "snapshot", "Bob's snapshot");
  assert.equal(snap.resumed, true);
  assert.equal(snap.room.host, a.body.participant_id);
  const held = await wb.next((f) => f.type === "offer", "the held offer");
  assert.equal(held.sdp, SDP);
  assert.equal(held.generation, 3, "its number kept through the eviction");
  await wa.next((f) => f.type === "participant_back", "Bob back");

  // Now a full restart: every socket drops; reconnecting resumes the same sessions, host and
  // mute state included.
  wb.send({ type: "set_media", audio_muted: true, video_muted: false });
  await wa.next((f) => f.type === "media_changed", "Bob muted");
  await evict(name, "restart");
  const closedA = await wa.closed;
  assert.notEqual(closedA.code, 1000, "a restart is a drop, not a leave");
  const wa2 = connect(a.body.ws_url);
  const snapA = await wa2.next((f) => f.type === "snapshot", "Ada's snapshot after the restart");
  assert.equal(snapA.resumed, true);
  assert.equal(snapA.room.host, a.body.participant_id);
  const bob = snapA.room.participants.find((p) => p.id === b.body.participant_id);
  assert.ok(bob, "Bob is still a member (away until he is back)");
  assert.equal(bob.audio_muted, true);
  const wb2 = connect(b.body.ws_url);
  assert.equal((await wb2.next((f) => f.type === "snapshot")).resumed, true);
  wa2.ws.close(1000);
  wb2.ws.close(1000);
});

test("a drain notice moves the room, and a second one right after the move moves it again", async () => {
  const name = room();
  const a = await join(name, "Ada"); // Austin: us-east
  assert.equal(a.body.sfu.id, "us-east");
  const wa = connect(a.body.ws_url);
  await wa.next((f) => f.type === "snapshot");

  let res = await signedPost("/api/sfu/draining", { sfu: "us-east", rooms: [name] });
  assert.equal(res.status, 204);
  const first = await wa.next((f) => f.type === "sfu_changed", "moved off us-east");
  assert.notEqual(first.sfu, "us-east");
  // No new room lands on the draining SFU meanwhile.
  const other = await join(room(), "Newcomer");
  assert.notEqual(other.body.sfu.id, "us-east", "a draining SFU takes no new room");

  // The SFU the room just moved to drains too, inside the window where reports of stopped media
  // from old connections are ignored: a drain notice is not such a report.
  res = await signedPost("/api/sfu/draining", { sfu: first.sfu, rooms: [name] });
  assert.equal(res.status, 204);
  const second = await wa.next((f) => f.type === "sfu_changed", `moved off ${first.sfu}`);
  assert.ok(![first.sfu, "us-east"].includes(second.sfu), JSON.stringify(second));
  wa.ws.close(1000);

  // The real SFUs were never draining: their next heartbeats bring them back for new rooms.
  const deadline = Date.now() + 8000;
  while ((await health()).sfus.some((s) => s.draining)) {
    assert.ok(Date.now() < deadline, "SFUs still listed as draining");
    await new Promise((r) => setTimeout(r, 200));
  }
});

test("members get a fresh room token over the socket before theirs expires", async () => {
  const name = room();
  const a = await join(name, "Ada", undefined, { "x-edgemeet-dev-token-ttl": "6" });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const first = JSON.parse(Buffer.from(a.body.token.split(".")[1], "base64url"));
  assert.equal(first.exp - first.iat, 6);
  const wa = connect(a.body.ws_url);
  await wa.next((f) => f.type === "snapshot");
  // Refreshed with a third of its lifetime left (4 s after it was issued).
  const fresh = await wa.next((f) => f.type === "token", "a fresh token", 8000);
  const claims = JSON.parse(Buffer.from(fresh.token.split(".")[1], "base64url"));
  assert.equal(claims.sub, first.sub);
  assert.equal(claims.room, name);
  assert.notEqual(claims.jti, first.jti);
  assert.ok(claims.exp > first.exp, `${claims.exp} > ${first.exp}`);
  assert.equal(fresh.expires_at_ms, claims.exp * 1000);
  // The fresh token opens the room: the same session resumes on it.
  const wa2 = connect(`/api/rooms/${name}/ws?token=${fresh.token}`);
  assert.equal((await wa2.next((f) => f.type === "snapshot")).resumed, true);
  wa2.send({ type: "ping", nonce: 3 });
  assert.equal((await wa2.next((f) => f.type === "pong")).nonce, 3);
  wa2.ws.close(1000);

  // A lifetime outside 5 s – 15 min is refused.
  const bad = await join(room(), "Ada", undefined, { "x-edgemeet-dev-token-ttl": "1" });
  assert.equal(bad.status, 400);
});
