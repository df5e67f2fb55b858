// Meeting controls at the socket level, against the room's Durable Object in workerd: private chat
// reaches only its addressee, a ban outlives the object's eviction, a waiting joiner hears nothing
// of the room, and host actions from a participant are refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, join, connect, room, addrFor } from "./helpers.mjs";

/** Joins `name` to `name` with a cookie jar of its own (`cookie`: a browser identity). */
async function joinWith(r, name, cookie) {
  const res = await fetch(`${BASE}/api/rooms/${r}/join`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-edgemeet-dev-addr": addrFor(r), ...(cookie ? { cookie } : {}) },
    body: JSON.stringify({ name }),
  });
  const set = res.headers.get("set-cookie");
  return { status: res.status, body: await res.json(), cookie: set ? set.split(";")[0] : cookie };
}

async function member(r, name, cookie) {
  const j = await joinWith(r, name, cookie);
  assert.equal(j.status, 200, JSON.stringify(j.body));
  const ws = connect(j.body.ws_url);
  await ws.next((f) => f.type === "snapshot" || f.type === "waiting", `${name} in`);
  return { ...j, ws, id: j.body.participant_id };
}

test("private messages reach only their addressee (and the sender); everyone's reach everyone", async () => {
  const r = room();
  const a = await member(r, "Ada");
  const b = await member(r, "Bo");
  const c = await member(r, "Cy");
  a.ws.send({ type: "chat", text: "for Bo only", to: b.id, client_id: "p1" });
  assert.equal((await b.ws.next((f) => f.type === "chat_message", "Bo's copy")).message.text, "for Bo only");
  assert.equal((await a.ws.next((f) => f.type === "chat_message", "Ada's copy")).message.to, b.id);
  a.ws.send({ type: "chat", text: "for all", client_id: "p2" });
  for (const p of [a, b, c]) await p.ws.next((f) => f.type === "chat_message" && f.message.text === "for all", "for all");
  // Cy got the public one, never the private one.
  c.ws.send({ type: "ping", nonce: 1 });
  await c.ws.next((f) => f.type === "pong");
  assert.deepEqual(c.ws.frames.filter((f) => f.type === "chat_message" && f.message.to), []);
  // A joiner gets the history, without what was private to others.
  const d = await joinWith(r, "Dee");
  const wd = connect(d.body.ws_url);
  const snap = await wd.next((f) => f.type === "snapshot");
  assert.deepEqual(snap.room.chat.map((m) => m.text), ["for all"]);
  for (const p of [a, b, c]) p.ws.ws.close(1000);
  wd.ws.close(1000);
});

test("a participant's host actions are refused with forbidden; a ban survives eviction", async () => {
  const r = room();
  const host = await member(r, "Host");
  const bob = await member(r, "Bob");
  bob.ws.send({ type: "remove", id: host.id });
  const e = await bob.ws.next((f) => f.type === "error", "refusal");
  assert.equal(e.code, "forbidden");
  // The host removes Bob: told why, closed for good.
  host.ws.send({ type: "remove", id: bob.id });
  assert.equal((await bob.ws.next((f) => f.type === "error")).message, "You were removed from this meeting.");
  assert.equal((await bob.ws.closed).code, 4403);
  // The room object loses its memory; Bob's browser (its cookie) is still refused.
  const ev = await fetch(`${BASE}/api/dev/rooms/${r}/evict`, { method: "POST", body: JSON.stringify({ mode: "memory" }) });
  assert.equal(ev.status, 200);
  const again = await joinWith(r, "Bob again", bob.cookie);
  assert.equal(again.status, 403);
  assert.equal(again.body.message, "You were removed from this meeting.");
  // Another browser may join.
  const other = await joinWith(r, "Someone else");
  assert.equal(other.status, 200);
  host.ws.ws.close(1000);
});

test("a waiting joiner hears nothing of the room until let in", async () => {
  const r = room();
  const host = await member(r, "Host");
  host.ws.send({ type: "update_settings", settings: { waiting_room: true, locked: false, has_password: false,
    password_skips_waiting: false, may_share_screen: true, may_unmute: true, may_chat: true, may_react: true } });
  await host.ws.next((f) => f.type === "settings");
  const w = await joinWith(r, "Wanda");
  assert.equal(w.body.waiting, true);
  const ww = connect(w.body.ws_url);
  assert.equal((await ww.next((f) => f.type === "waiting")).room, r);
  const list = await host.ws.next((f) => f.type === "waiting_list", "waiting list");
  assert.deepEqual(list.waiting.map((x) => x.name), ["Wanda"]);
  // The room goes on: chat, joins — nothing reaches the waiting socket.
  host.ws.send({ type: "chat", text: "secret agenda", client_id: "s1" });
  await host.ws.next((f) => f.type === "chat_message");
  const x = await member(r, "Xavier");
  void x;
  ww.send({ type: "ping", nonce: 5 });
  await ww.next((f) => f.type === "pong");
  assert.deepEqual(ww.frames.filter((f) => !["pong", "waiting"].includes(f.type)).map((f) => f.type), []);
  // Let in: a fresh token, then the socket asks to reconnect with it.
  host.ws.send({ type: "admit", id: w.body.participant_id });
  const t = await ww.next((f) => f.type === "token", "the admitted token");
  assert.equal((await ww.closed).code, 1012);
  const wi = connect(`/api/rooms/${r}/ws?token=${t.token}`);
  const snap = await wi.next((f) => f.type === "snapshot");
  assert.ok(snap.room.participants.some((p) => p.name === "Wanda"));
  assert.deepEqual(snap.room.chat.map((m) => m.text), ["secret agenda"]);
  host.ws.ws.close(1000);
  wi.ws.close(1000);
});

test("a token handed out before the host shut the door, or before the meeting ended, brings nobody in", async () => {
  const r = room();
  const host = await member(r, "Host");
  const early = await joinWith(r, "Early"); // a token, not used yet
  assert.equal(early.status, 200);
  host.ws.send({ type: "update_settings", settings: { waiting_room: false, locked: true, has_password: false,
    password_skips_waiting: false, may_share_screen: true, may_unmute: true, may_chat: true, may_react: true } });
  await host.ws.next((f) => f.type === "settings");
  const late = connect(early.body.ws_url);
  assert.equal((await late.next((f) => f.type === "error")).message, "This meeting is locked.");
  assert.equal((await late.closed).code, 4403);
  // Asked now, the refusal comes before any password is checked.
  const asked = await joinWith(r, "Asked", undefined);
  assert.equal(asked.status, 403);
  assert.equal(asked.body.message, "This meeting is locked.");
  // Unlocked, then ended: a member's token (its meeting is over) is told so, not let in.
  host.ws.send({ type: "update_settings", settings: { waiting_room: false, locked: false, has_password: false,
    password_skips_waiting: false, may_share_screen: true, may_unmute: true, may_chat: true, may_react: true } });
  await host.ws.next((f) => f.type === "settings" && !f.settings.locked);
  const bob = await member(r, "Bob");
  host.ws.send({ type: "end_meeting" });
  assert.equal((await bob.ws.closed).code, 4410);
  const back = connect(bob.body.ws_url);
  await back.next((f) => f.type === "meeting_ended", "told the meeting ended");
  assert.equal((await back.closed).code, 4410);
  // A new join starts the next meeting.
  const next = await member(r, "Next");
  assert.equal(next.status, 200);
  next.ws.ws.close(1000);
});

test("people in the waiting room get no TURN credentials; members do", async () => {
  const r = room();
  const owner = await joinWith(r, "Owner");
  assert.equal(owner.status, 200);
  const ows = connect(owner.body.ws_url);
  await ows.next((f) => f.type === "snapshot", "owner in");
  ows.send({ type: "update_settings", settings: { waiting_room: true, locked: false, has_password: false, password_skips_waiting: false, may_share_screen: true, may_unmute: true, may_chat: true, may_react: true } });
  await ows.next((f) => f.type === "settings", "settings");
  const guest = await joinWith(r, "Guest");
  assert.equal(guest.status, 200);
  assert.equal(guest.body.waiting, true);
  assert.ok(!guest.body.ice_servers || guest.body.ice_servers.length === 0, JSON.stringify(guest.body.ice_servers));
  const refused = await fetch(`${BASE}/api/rooms/${r}/ice-servers`, { headers: { authorization: `Bearer ${guest.body.token}` } });
  assert.equal(refused.status, 403);
  const ok = await fetch(`${BASE}/api/rooms/${r}/ice-servers`, { headers: { authorization: `Bearer ${owner.body.token}` } });
  assert.equal(ok.status, 200);
  // Someone removed gets none with the token they still hold.
  const gws = connect(guest.body.ws_url);
  await gws.next((f) => f.type === "waiting", "the guest waits");
  ows.send({ type: "admit", id: guest.body.participant_id });
  const fresh = await gws.next((f) => f.type === "token", "the guest's room token");
  const inRoom = connect(`/api/rooms/${r}/ws?token=${fresh.token}`);
  await inRoom.next((f) => f.type === "snapshot", "guest in");
  const before = await fetch(`${BASE}/api/rooms/${r}/ice-servers`, { headers: { authorization: `Bearer ${fresh.token}` } });
  assert.equal(before.status, 200, "a member gets a relay");
  ows.send({ type: "remove", id: guest.body.participant_id });
  await inRoom.closed;
  const after = await fetch(`${BASE}/api/rooms/${r}/ice-servers`, { headers: { authorization: `Bearer ${fresh.token}` } });
  assert.equal(after.status, 403, "removed: no relay");
});

test("polls in workerd: the host launches, one vote per browser (a second tab's is refused), results survive eviction", async () => {
  const r = room();
  const host = await member(r, "Host");
  const bob = await member(r, "Bob");
  const bobTab = await member(r, "Bob", bob.cookie); // the same browser, another tab
  const cy = await member(r, "Cy");
  // Participants launch nothing.
  bob.ws.send({ type: "create_poll", question: "Mine?", options: ["A", "B"] });
  assert.equal((await bob.ws.next((f) => f.type === "error", "refusal")).code, "forbidden");
  host.ws.send({ type: "create_poll", question: "Lunch?", options: ["Soup", "Salad"] });
  for (const p of [host, bob, bobTab, cy]) {
    const f = await p.ws.next((f) => f.type === "poll", "the new poll");
    assert.equal(f.poll.question, "Lunch?");
    assert.equal(f.poll.results !== null && f.poll.results !== undefined, p === host, "only the host sees results");
  }
  bob.ws.send({ type: "vote", poll: 1, choices: [1] });
  // Bob's other tab is told this browser voted; its own vote is then refused.
  assert.deepEqual((await bobTab.ws.next((f) => f.type === "poll" && f.poll.voted, "voted mark")).poll.my_choices, [1]);
  bobTab.ws.send({ type: "vote", poll: 1, choices: [0] });
  const twice = await bobTab.ws.next((f) => f.type === "error", "second vote");
  assert.deepEqual([twice.code, twice.message], ["already_voted", "You have already voted in this poll."]);
  cy.ws.send({ type: "vote", poll: 1, choices: [1] });
  const live = await host.ws.next((f) => f.type === "poll" && f.poll.results?.voters === 2, "live results");
  assert.deepEqual(live.poll.results.counts, [0, 2]);
  assert.deepEqual(live.poll.results.names[1].sort(), ["Bob", "Cy"]);
  // The room object loses its memory: the poll comes back from its SQLite rows.
  const ev = await fetch(`${BASE}/api/dev/rooms/${r}/evict`, { method: "POST", body: JSON.stringify({ mode: "memory" }) });
  assert.equal(ev.status, 200);
  host.ws.send({ type: "share_poll_results", poll: 1 });
  host.ws.send({ type: "end_poll", poll: 1 });
  const ended = await cy.ws.next((f) => f.type === "poll" && !f.poll.open, "ended");
  assert.deepEqual(ended.poll.results.counts, [0, 2], "shared results, counted before the eviction");
  // A late joiner sees the ended poll with its shared results; a vote now is refused in words.
  const late = await joinWith(r, "Dee");
  const dee = connect(late.body.ws_url);
  const snap = await dee.next((f) => f.type === "snapshot");
  assert.equal(snap.room.polls.length, 1);
  assert.equal(snap.room.polls[0].open, false);
  assert.deepEqual(snap.room.polls[0].results.counts, [0, 2]);
  dee.send({ type: "vote", poll: 1, choices: [0] });
  assert.equal((await dee.next((f) => f.type === "error", "vote on an ended poll")).message, "This poll has ended.");
  for (const p of [host, bob, bobTab, cy]) p.ws.ws.close(1000);
  dee.ws.close(1000);
});

test("breakout rooms in workerd: people move, each room's chat stays in it, the closing countdown (the DO's alarm, after an eviction) brings everyone back", async () => {
  const r = room();
  const host = await member(r, "Host");
  const bob = await member(r, "Bob");
  const cy = await member(r, "Cy");
  const dee = await member(r, "Dee");
  bob.ws.send({ type: "set_breakouts", rooms: ["Red"], assigned: {} });
  assert.equal((await bob.ws.next((f) => f.type === "error", "refusal")).code, "forbidden");
  bob.ws.send({ type: "edit_breakouts", edit: "add_room" });
  assert.equal((await bob.ws.next((f) => f.type === "error" && f.code === "forbidden", "refusal of an edit")).message,
    "Only hosts and co-hosts can plan breakout rooms.");
  // The host's page sends each change as it is made, without waiting for the room's answer: every
  // one of them counts (each is applied to the plan the room has).
  for (const edit of [
    "add_room",
    "add_room",
    { rename_room: { room: "Room 1", name: "Red" } },
    { rename_room: { room: "Room 2", name: "Blue" } },
    { assign: { participant: bob.id, room: "Red" } },
    { assign: { participant: cy.id, room: "Blue" } },
    { assign: { participant: dee.id, room: "Blue" } },
  ]) host.ws.send({ type: "edit_breakouts", edit });
  for (const p of [host, bob, cy, dee]) {
    const f = await p.ws.next((f) => f.type === "breakouts" && Object.keys(f.breakouts.assigned).length === 3, "the plan");
    assert.deepEqual(f.breakouts.rooms, ["Red", "Blue"]);
    assert.deepEqual(f.breakouts.assigned, { [bob.id]: 1, [cy.id]: 2, [dee.id]: 2 });
    // The plans on the way there are not looked for again.
    for (let i; (i = p.ws.frames.findIndex((f) => f.type === "breakouts")) >= 0;) p.ws.frames.splice(i, 1);
  }
  host.ws.send({ type: "open_breakouts" });
  for (const [p, scope] of [[bob, 1], [cy, 2], [dee, 2]]) {
    const m = await p.ws.next((f) => f.type === "moved", "moved");
    assert.equal(m.scope, scope);
  }
  const seen = await host.ws.next((f) => f.type === "participant_moved" && f.id === dee.id, "host sees Dee move");
  assert.equal(seen.scope, 2);
  // Blue's chat reaches Blue only.
  cy.ws.send({ type: "chat", text: "hello blue", client_id: "b1" });
  assert.equal((await dee.ws.next((f) => f.type === "chat_message", "Dee's copy")).message.scope, 2);
  for (const p of [host, bob]) {
    p.ws.send({ type: "ping", nonce: 7 });
    await p.ws.next((f) => f.type === "pong");
    assert.deepEqual(p.ws.frames.filter((f) => f.type === "chat_message"), [], "not in Blue");
  }
  // A message to every room.
  host.ws.send({ type: "breakout_message", text: "One minute left" });
  for (const p of [bob, cy, dee]) {
    const f = await p.ws.next((f) => f.type === "breakouts" && f.breakouts.message, "banner");
    assert.deepEqual(f.breakouts.message, { from: "Host", text: "One minute left" });
  }
  // The object loses its memory; the plan and where everyone is come back from storage, and the
  // countdown runs on the object's alarm.
  const ev = await fetch(`${BASE}/api/dev/rooms/${r}/evict`, { method: "POST", body: JSON.stringify({ mode: "memory" }) });
  assert.equal(ev.status, 200);
  host.ws.send({ type: "close_breakouts", seconds: 1 });
  const closing = await bob.ws.next((f) => f.type === "breakouts" && f.breakouts.closing_at, "countdown");
  assert.ok(closing.breakouts.open);
  for (const p of [bob, cy, dee]) {
    const back = await p.ws.next((f) => f.type === "moved" && f.scope === 0, "back in the main room", 10_000);
    assert.deepEqual(back.chat, [], "the main room's chat (empty)");
  }
  const closed = await host.ws.next((f) => f.type === "breakouts" && !f.breakouts.open, "closed");
  assert.deepEqual(closed.breakouts.rooms, ["Red", "Blue"], "the plan stays");
  // A late joiner lands in the main room with everyone.
  const late = await joinWith(r, "Eve");
  const eve = connect(late.body.ws_url);
  const snap = await eve.next((f) => f.type === "snapshot");
  assert.deepEqual(snap.room.participants.map((p) => p.scope), [0, 0, 0, 0, 0]);
  for (const p of [host, bob, cy, dee]) p.ws.ws.close(1000);
  eve.ws.close(1000);
});
