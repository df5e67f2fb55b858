// Scheduled meetings on the real local D1 (wrangler dev, workerd): schedule, list, change, cancel,
// the invitation (.ics), and joining one: the owner hosts, named co-hosts are co-hosts, others
// wait, the sign-in rule and the meeting's password hold, a cancelled or unknown meeting is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, accountBrowser, connect } from "./helpers.mjs";

const PASSWORD = "correct horse battery";
const email = (tag) => `${tag}-${Math.random().toString(36).slice(2, 10)}@example.org`;

async function person(tag, name) {
  const b = accountBrowser();
  const mail = email(tag);
  const r = await b.req("POST", "/api/account/register", { email: mail, name, password: PASSWORD });
  assert.equal(r.status, 201, r.text);
  b.email = mail;
  return b;
}

/** A wall-clock time `days` from now, as a datetime-local value. */
const inDays = (days) => new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 16);

const form = (extra = {}) => ({
  title: "Design review",
  start: inDays(2),
  time_zone: "Europe/Berlin",
  duration_minutes: 45,
  recurrence: "weekly",
  occurrences: 3,
  ...extra,
});

/** Joins `room` as `b` (its cookies: its session, if any) and connects; the join answer and, when
 *  let in, the role the room gave in its snapshot. */
async function joinAs(b, room, name, password) {
  const r = await b.req("POST", `/api/rooms/${room}/join`, { name, ...(password ? { password } : {}) });
  if (r.status !== 200) return { status: r.status, body: r.json };
  const sock = connect(r.json.ws_url);
  const first = await sock.next((f) => f.type === "snapshot" || f.type === "waiting", "snapshot or waiting");
  const me = first.type === "snapshot" ? first.room.participants.find((p) => p.id === first.you) : null;
  return { status: 200, body: r.json, sock, waiting: first.type === "waiting", role: me?.role, host: first.room?.host };
}

test("schedule, list, change and cancel a meeting; its invitation follows (UID, SEQUENCE, RRULE, METHOD:CANCEL)", async () => {
  const owner = await person("owner", "Olga Owner");
  const co = await person("cohost", "Cora Cohost");
  const stranger = await person("stranger", "Sam Stranger");

  for (const [extra, re] of [
    [{ time_zone: "Mars/Olympus" }, /Europe\/Berlin/],
    [{ start: "tomorrow at ten" }, /date and time/],
    [{ start: inDays(-30), recurrence: "none" }, /in the future/],
    [{ duration_minutes: 1 }, /5 minutes/],
    [{ occurrences: 1 }, /2 to 200 times/],
    [{ cohosts: ["not an email"] }, /not an email address/],
    [{ title: "" }, /title/],
  ]) {
    const r = await owner.req("POST", "/api/meetings", form(extra));
    assert.equal(r.status, 400, `${JSON.stringify(extra)}: ${r.text}`);
    assert.match(r.json.message, re);
  }
  // Signed out: nothing.
  assert.equal((await accountBrowser().req("POST", "/api/meetings", form())).status, 401);

  const made = await owner.req("POST", "/api/meetings", form({ cohosts: [co.email.toUpperCase()], title: "Design review'; DROP TABLE meetings;--" }));
  assert.equal(made.status, 201, made.text);
  const m = made.json;
  assert.match(m.room, /^m-[0-9a-f]{32}$/, "an unguessable room");
  assert.equal(m.role, "owner");
  assert.equal(m.title, "Design review'; DROP TABLE meetings;--");
  assert.deepEqual(m.cohosts, [co.email]);
  assert.equal(m.sequence, 0);
  assert.ok(m.next_start > Date.now() && m.next_end - m.next_start === 45 * 60_000, JSON.stringify(m));
  assert.match(m.when, /Europe\/Berlin\), weekly, 3 times$/);

  // Upcoming: the owner's and the co-host's lists have it; a stranger's does not, nor can they read it.
  const mine = (await owner.req("GET", "/api/meetings")).json.meetings;
  assert.ok(mine.some((x) => x.id === m.id));
  const theirs = (await co.req("GET", "/api/meetings")).json.meetings;
  assert.equal(theirs.find((x) => x.id === m.id)?.role, "cohost");
  assert.ok(!(await stranger.req("GET", "/api/meetings")).json.meetings.some((x) => x.id === m.id));
  const peek = await stranger.req("GET", `/api/meetings/${m.id}`);
  assert.equal(peek.status, 404);
  assert.equal((await stranger.req("GET", `/api/meetings/${m.id}/invitation.ics`)).status, 404);

  // The invitation text and file.
  const one = await co.req("GET", `/api/meetings/${m.id}`);
  assert.equal(one.status, 200);
  assert.equal(one.json.link, `${BASE}/${m.room}`);
  assert.match(one.json.invitation, /Olga Owner invites you/);
  assert.ok(one.json.invitation.includes(`Join: ${BASE}/${m.room}`));
  const ics = await owner.req("GET", `/api/meetings/${m.id}/invitation.ics`);
  assert.equal(ics.status, 200);
  assert.match(ics.headers.get("content-type"), /^text\/calendar/);
  const unfold = (t) => t.replace(/\r?\n[ \t]/g, "");
  const cal = unfold(ics.text);
  for (const line of ["BEGIN:VCALENDAR", "METHOD:REQUEST", `UID:${m.id}@edgemeet`, "SEQUENCE:0", "RRULE:FREQ=WEEKLY;COUNT=3", "DTSTART;TZID=Europe/Berlin:", "STATUS:CONFIRMED", "END:VCALENDAR"]) {
    assert.ok(cal.includes(line), `${line} in\n${cal}`);
  }
  assert.ok(/\r\n/.test(ics.text), "CRLF line ends (RFC 5545)");

  // Only the owner changes it; a change bumps the sequence.
  const coEdit = await co.req("PUT", `/api/meetings/${m.id}`, form({ title: "Hijacked" }));
  assert.equal(coEdit.status, 403);
  assert.match(coEdit.json.message, /Only the meeting's owner/);
  const edit = await owner.req("PUT", `/api/meetings/${m.id}`, form({ title: "Design review (moved)", recurrence: "daily", occurrences: 5, cohosts: [co.email] }));
  assert.equal(edit.status, 200, edit.text);
  assert.equal(edit.json.sequence, 1);
  assert.equal(edit.json.room, m.room, "the link stays");
  const cal1 = unfold((await owner.req("GET", `/api/meetings/${m.id}/invitation.ics`)).text);
  assert.ok(cal1.includes("SEQUENCE:1") && cal1.includes("RRULE:FREQ=DAILY;COUNT=5") && cal1.includes(`UID:${m.id}@edgemeet`), cal1);

  // Cancel: METHOD:CANCEL with a higher sequence, gone from "upcoming", and its link refuses joins.
  assert.equal((await co.req("POST", `/api/meetings/${m.id}/cancel`, {})).status, 403);
  assert.equal((await owner.req("POST", `/api/meetings/${m.id}/cancel`, {})).status, 204);
  const cal2 = unfold((await owner.req("GET", `/api/meetings/${m.id}/invitation.ics`)).text);
  assert.ok(cal2.includes("METHOD:CANCEL") && cal2.includes("STATUS:CANCELLED") && cal2.includes("SEQUENCE:2"), cal2);
  assert.ok(!(await owner.req("GET", "/api/meetings")).json.meetings.some((x) => x.id === m.id));
  const late = await joinAs(accountBrowser(), m.room, "Late Larry");
  assert.equal(late.status, 404);
  assert.match(late.body.message, /cancelled/);
  assert.equal((await owner.req("PUT", `/api/meetings/${m.id}`, form())).status, 409);
});

test("joining a scheduled meeting: guests wait, the owner hosts whenever they come, named co-hosts are co-hosts", async () => {
  const owner = await person("own", "Olga Owner");
  const co = await person("co", "Cora Cohost");
  const m = (await owner.req("POST", "/api/meetings", form({ cohosts: [co.email] }))).json;

  // A guest first: the waiting room (nobody hosts a scheduled meeting by being first).
  const guest = await joinAs(accountBrowser(), m.room, "Gus Guest");
  assert.equal(guest.status, 200);
  assert.equal(guest.waiting, true, "the guest waits");
  // The co-host comes in as a co-host, and sees the guest waiting.
  const c = await joinAs(co, m.room, "Cora");
  assert.equal(c.waiting, false);
  assert.equal(c.role, "cohost");
  assert.equal(c.host ?? null, null, "no host yet");
  // The owner comes in as the host.
  const o = await joinAs(owner, m.room, "Olga");
  assert.equal(o.waiting, false);
  assert.equal(o.role, "host");
  // A stranger with an account is a guest like any other.
  const s = await joinAs(await person("str", "Sam"), m.room, "Sam");
  assert.equal(s.waiting, true);
  // A room named like a scheduled meeting that does not exist: refused, in words.
  const none = await joinAs(accountBrowser(), `m-${"0".repeat(32)}`, "Nobody");
  assert.equal(none.status, 404);
  assert.match(none.body.message, /no such meeting/);
  for (const x of [guest, c, o, s]) x.sock?.ws.close();
});

test("a scheduled meeting's sign-in rule and password are kept; its owner needs no password", async () => {
  const owner = await person("pw", "Pia");
  const m = (await owner.req("POST", "/api/meetings", form({ only_signed_in: true, password: "open sesame", waiting_room: false }))).json;
  assert.equal(m.has_password, true);
  const anon = await joinAs(accountBrowser(), m.room, "Anon", "open sesame");
  assert.equal(anon.status, 401);
  assert.match(anon.body.message, /signed in/);
  const member = await person("mem", "Mia");
  const noPw = await joinAs(member, m.room, "Mia");
  assert.equal(noPw.status, 401);
  assert.equal(noPw.body.code, "password_required");
  const wrong = await joinAs(member, m.room, "Mia", "close sesame");
  assert.equal(wrong.body.code, "wrong_password");
  const right = await joinAs(member, m.room, "Mia", "open sesame");
  assert.equal(right.status, 200, JSON.stringify(right.body));
  assert.equal(right.waiting, false, "no waiting room in this one");
  assert.equal(right.role, "participant");
  const own = await joinAs(owner, m.room, "Pia");
  assert.equal(own.status, 200, JSON.stringify(own.body));
  assert.equal(own.role, "host", "the owner hosts, though someone came first");
  for (const x of [right, own]) x.sock?.ws.close();
});
