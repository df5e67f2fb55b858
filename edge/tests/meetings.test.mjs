// Scheduled meetings on the real local D1 (wrangler dev, workerd): schedule, list, change, cancel,
// the invitation (.ics), and joining one: the owner hosts, named co-hosts are co-hosts, others
// wait, the sign-in rule and the meeting's password hold, a cancelled or unknown meeting is refused.
// And the reports the meetings' rooms write: attendance, totals, CSV, a 500-person one timed.
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

/** Leaves cleanly (the tab closed) and waits until the socket is closed. */
async function leave(j) {
  j.sock.ws.close(1000);
  await j.sock.closed;
}

/** Polls the owner's report list until `ok(listing)` holds for `meetingId`'s run. */
async function reportWhen(owner, meetingId, ok, what, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    const r = await owner.req("GET", "/api/reports");
    assert.equal(r.status, 200, r.text);
    last = r.json.reports.find((x) => x.meeting === meetingId);
    if (last && ok(last)) return last;
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms; last ${JSON.stringify(last)}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

test("a meeting's report: who came and went (twice for one who left and came back), chat and poll totals, a CSV; only its owner reads it", async () => {
  const owner = await person("owner", "Olga Owner");
  const stranger = await person("stranger", "Sam Stranger");
  const made = await owner.req("POST", "/api/meetings", form({ title: "Retro", recurrence: "none", occurrences: undefined, waiting_room: false }));
  assert.equal(made.status, 201, made.text);
  const m = made.json;

  const o = await joinAs(owner, m.room, "Olga");
  assert.equal(o.role, "host");
  const ann = accountBrowser();
  const a = await joinAs(ann, m.room, "Robert'); DROP TABLE attendance;--");
  const bea = accountBrowser();
  const b1 = await joinAs(bea, m.room, "Bea");
  assert.ok(!a.waiting && !b1.waiting, "the waiting room is off");
  a.sock.send({ type: "chat", text: "hello", client_id: "c1" });
  o.sock.send({ type: "chat", text: "welcome", client_id: "c2" });
  o.sock.send({ type: "create_poll", question: "Again next week?", options: ["Yes", "No"] });
  await a.sock.next((f) => f.type === "poll", "the poll");
  a.sock.send({ type: "vote", poll: 1, choices: [0] });
  b1.sock.send({ type: "vote", poll: 1, choices: [1] });
  await b1.sock.next((f) => f.type === "poll" && f.poll.voted, "Bea's vote taken");
  o.sock.send({ type: "end_poll", poll: 1 });
  await o.sock.next((f) => f.type === "poll" && !f.poll.open, "the poll ended");
  // Bea leaves and comes back from the same browser: one person, two stints.
  await leave(b1);
  const b2 = await joinAs(bea, m.room, "Bea");
  // While it goes on, the report says so.
  const running = await reportWhen(owner, m.id, (x) => x.attendees === 3, "three people in the running meeting's report");
  assert.equal(running.ended_at, null);
  assert.equal(running.title, "Retro");
  for (const j of [a, b2, o]) await leave(j);
  const done = await reportWhen(owner, m.id, (x) => x.ended_at !== null, "the report's end after everyone left");

  const r = await owner.req("GET", `/api/reports/${m.id}/${done.started_at}`);
  assert.equal(r.status, 200, r.text);
  const rep = r.json;
  assert.deepEqual(rep.attendees.map((x) => x.name), ["Olga", "Robert'); DROP TABLE attendance;--", "Bea"], "stored literally, in order of arrival");
  assert.equal(rep.attendees[2].stints.length, 2, "Bea left and came back");
  assert.ok(rep.attendees.every((x) => x.stints.every((s) => s.left !== null && s.left >= s.joined)), JSON.stringify(rep.attendees));
  assert.ok(rep.attendees.every((x) => x.total_ms > 0 && x.total_ms <= rep.duration_ms), JSON.stringify(rep));
  assert.equal(rep.peak, 3);
  assert.equal(rep.chat_messages, 2);
  assert.equal(rep.ended_at, done.ended_at);
  assert.ok(rep.duration_ms > 0 && rep.duration_ms < 120_000, `duration ${rep.duration_ms}`);
  assert.deepEqual(rep.polls.map((p) => [p.question, p.counts, p.voters, p.open]), [["Again next week?", [1, 1], 2, false]]);

  const csv = await owner.req("GET", `/api/reports/${m.id}/${done.started_at}/report.csv`);
  assert.equal(csv.status, 200, csv.text);
  assert.match(csv.headers.get("content-type"), /^text\/csv/);
  assert.match(csv.headers.get("content-disposition"), /^attachment; filename="Retro-\d{4}-\d{2}-\d{2}\.csv"$/);
  const lines = csv.text.trim().split("\n");
  assert.equal(lines[0], "Name,Joined (Europe/Berlin),Left (Europe/Berlin),Minutes,Total minutes");
  assert.equal(lines.length, 1 + 4, "a line per stint");
  assert.match(lines[2], /^Robert'\); DROP TABLE attendance;--,\d{4}-/, "stored and written literally");

  // Nobody else reads it: another account, a signed-out browser, a made-up run.
  assert.equal((await stranger.req("GET", `/api/reports/${m.id}/${done.started_at}`)).status, 404);
  assert.equal((await stranger.req("GET", "/api/reports")).json.reports.length, 0);
  assert.equal((await accountBrowser().req("GET", `/api/reports/${m.id}/${done.started_at}`)).status, 401);
  assert.equal((await owner.req("GET", `/api/reports/${m.id}/12345`)).status, 404);
  assert.equal((await owner.req("GET", `/api/reports/${m.id}/not-a-time`)).status, 404);
  // The owner's data download lists the meeting and its report's run.
  const data = (await owner.req("GET", "/api/account/data")).json;
  assert.ok(data.meetings.some((x) => x.id === m.id && x.schedule.title === "Retro"));
  assert.ok(data.meeting_reports.some((x) => x.meeting_id === m.id && x.attendees === 3));
});

test("a 500-person meeting's report: every arrival and departure is in it, and it is made in a moment (figures)", async () => {
  const owner = await person("owner", "Olga Owner");
  const made = await owner.req("POST", "/api/meetings", form({ title: "All hands", recurrence: "none", occurrences: undefined, waiting_room: false }));
  assert.equal(made.status, 201, made.text);
  const m = made.json;
  const o = await joinAs(owner, m.room, "Olga");
  const N = 500;
  const BATCH = 25;
  const t0 = performance.now();
  // 25 at a time come in, then go (500 people all at once would be 250,000 frames of "joined").
  for (let i = 0; i < N; i += BATCH) {
    const group = await Promise.all(
      Array.from({ length: Math.min(BATCH, N - i) }, (_, k) => joinAs(accountBrowser(), m.room, `Guest ${i + k + 1}`)),
    );
    assert.ok(group.every((g) => g.status === 200 && !g.waiting), JSON.stringify(group.find((g) => g.status !== 200)?.body));
    await Promise.all(group.map(leave));
  }
  const joined = performance.now() - t0;
  await leave(o);
  const done = await reportWhen(owner, m.id, (x) => x.ended_at !== null && x.attendees === N + 1, `${N + 1} attendees in the report`, 60000);
  const times = { json: [], csv: [] };
  let rep;
  let csv;
  for (let k = 0; k < 5; k++) {
    const r = await owner.req("GET", `/api/reports/${m.id}/${done.started_at}`);
    assert.equal(r.status, 200, r.text);
    times.json.push(r.ms);
    rep = r.json;
    const c = await owner.req("GET", `/api/reports/${m.id}/${done.started_at}/report.csv`);
    assert.equal(c.status, 200);
    times.csv.push(c.ms);
    csv = c.text;
  }
  assert.equal(rep.attendees.length, N + 1);
  assert.ok(rep.attendees.every((x) => x.stints.length === 1 && x.stints[0].left !== null), "everyone came once and left");
  assert.ok(rep.peak >= 2 && rep.peak <= BATCH + 1, `peak ${rep.peak}`);
  assert.equal(csv.trim().split("\n").length, N + 2);
  const p50 = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(
    `figure: report of a ${N + 1}-person meeting (${2 * (N + 1)} attendance rows): JSON p50 ${p50(times.json).toFixed(1)} ms, CSV p50 ${p50(times.csv).toFixed(1)} ms ` +
      `(workerd, local D1); ${N} people came and went in ${(joined / 1000).toFixed(1)} s, ${BATCH} at a time`,
  );
});

test("the reminder cron marks a meeting starting within ten minutes (for its co-hosts too), not one starting later nor a cancelled one", async () => {
  const owner = await person("owner", "Rita Reminder");
  const co = await person("cohost", "Cal Cohost");
  // Wall-clock times in UTC, `min` minutes from now (to the minute, so a little sooner).
  const at = (min) => new Date(Date.now() + min * 60_000).toISOString().slice(0, 16);
  const one = { time_zone: "UTC", recurrence: "none", occurrences: undefined, cohosts: [co.email] };
  const soon = (await owner.req("POST", "/api/meetings", form({ ...one, title: "Soon", start: at(6) }))).json;
  const later = (await owner.req("POST", "/api/meetings", form({ ...one, title: "Later", start: at(31) }))).json;
  const gone = (await owner.req("POST", "/api/meetings", form({ ...one, title: "Called off", start: at(6) }))).json;
  assert.equal((await owner.req("POST", `/api/meetings/${gone.id}/cancel`, {})).status, 204);
  // The platform runs the scheduled handler every minute; here it runs now.
  const run = await fetch(`${BASE}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`);
  assert.equal(run.status, 200, await run.text());
  for (const who of [owner, co]) {
    const list = (await who.req("GET", "/api/meetings")).json.meetings;
    assert.equal(list.find((m) => m.id === soon.id)?.reminder, true, "starts within ten minutes");
    assert.equal(list.find((m) => m.id === later.id)?.reminder, false, "starts in half an hour");
    assert.equal(list.find((m) => m.id === gone.id), undefined, "cancelled");
  }
  // Running again marks nothing twice and changes nothing.
  assert.equal((await fetch(`${BASE}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`)).status, 200);
  assert.equal((await owner.req("GET", "/api/meetings")).json.meetings.find((m) => m.id === soon.id)?.reminder, true);
  // Moved to tomorrow: the mark was for the old time; the page no longer shows it.
  const moved = await owner.req("PUT", `/api/meetings/${soon.id}`, form({ ...one, title: "Soon", start: at(24 * 60) }));
  assert.equal(moved.status, 200, moved.text);
  assert.equal((await owner.req("GET", "/api/meetings")).json.meetings.find((m) => m.id === soon.id)?.reminder, false);
});
