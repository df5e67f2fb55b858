// Accounts on the real local D1 (wrangler dev, workerd): register, sign in and out, cookies,
// CSRF, throttling, password change, deletion, "Download my data" and read-your-writes through
// the D1 Sessions API bookmark. Node's fetch keeps no cookies: each test carries them by hand,
// as a browser would.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, newAddr, accountBrowser as browser } from "./helpers.mjs";

const SESSION = "__Host-edgemeet-session";
const BOOKMARK = "edgemeet-d1";

const email = (tag) => `${tag}-${Math.random().toString(36).slice(2, 10)}@example.org`;
const PASSWORD = "correct horse battery";

test("register, read back, sign out, sign in again: cookies are host-only, HttpOnly, Secure, SameSite=Lax and rotate", async () => {
  const b = browser();
  const mail = email("Ann");
  const r = await b.req("POST", "/api/account/register", { email: ` ${mail.toUpperCase()} `, name: "Ann Lovelace", password: PASSWORD });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.email, mail.toLowerCase(), "stored trimmed and lower-case");
  assert.equal(r.json.name, "Ann Lovelace");
  const session = r.cookies.find((c) => c.startsWith(`${SESSION}=`));
  assert.ok(session, `a session cookie: ${r.cookies}`);
  for (const part of ["Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=2592000"]) assert.ok(session.includes(part), `${session} has ${part}`);
  assert.ok(!/Domain=/i.test(session), "__Host- cookies name no domain");
  assert.match(b.jar.get(SESSION), /^[0-9a-f]{64}$/);
  assert.ok(!r.text.includes("argon2") && !r.text.includes(PASSWORD), "no hash, no password in the answer");
  const first = b.jar.get(SESSION);

  const me = await b.req("GET", "/api/account");
  assert.equal(me.status, 200, me.text);
  assert.equal(me.json.id, r.json.id);

  // The same address in other letters is the same account.
  const again = await browser().req("POST", "/api/account/register", { email: mail.toUpperCase(), name: "Ann 2", password: PASSWORD });
  assert.equal(again.status, 409);
  assert.equal(again.json.code, "account_exists");
  assert.match(again.json.message, /already exists/);

  const out = await b.req("POST", "/api/account/signout", {});
  assert.equal(out.status, 204);
  assert.ok(!b.jar.has(SESSION), "the cookie is cleared");
  // The old token is dead on the server too, not just forgotten by the browser.
  const replay = await fetch(`${BASE}/api/account`, { headers: { cookie: `${SESSION}=${first}` } });
  assert.equal(replay.status, 401);
  assert.equal((await replay.json()).code, "unauthorized");

  const wrong = await b.req("POST", "/api/account/signin", { email: mail, password: "not the password" });
  assert.equal(wrong.status, 401);
  assert.match(wrong.json.message, /do not match/);
  const nobody = await b.req("POST", "/api/account/signin", { email: email("nobody"), password: "whatever123" });
  assert.equal(nobody.status, 401);
  assert.equal(nobody.json.message, wrong.json.message, "an unknown email gets the same answer");

  const back = await b.req("POST", "/api/account/signin", { email: mail, password: PASSWORD });
  assert.equal(back.status, 200, back.text);
  assert.notEqual(b.jar.get(SESSION), first, "a new session token at sign-in");
  // Signing in again from a signed-in browser ends its previous session (rotation).
  const before = b.jar.get(SESSION);
  assert.equal((await b.req("POST", "/api/account/signin", { email: mail, password: PASSWORD })).status, 200);
  const stale = await fetch(`${BASE}/api/account`, { headers: { cookie: `${SESSION}=${before}` } });
  assert.equal(stale.status, 401);
  assert.equal((await b.req("GET", "/api/account")).status, 200);
});

test("requests from another site, or not JSON, change nothing (CSRF)", async () => {
  const mail = email("csrf");
  const body = JSON.stringify({ email: mail, name: "Eve's victim", password: PASSWORD });
  for (const [headers, code] of [
    [{ "sec-fetch-site": "cross-site", origin: "https://evil.example" }, "forbidden"],
    [{ "sec-fetch-site": "same-site", origin: "https://sub.example.org" }, "forbidden"],
    [{ "sec-fetch-site": "cross-site", origin: BASE }, "forbidden"],
    [{ "sec-fetch-site": null, origin: "https://evil.example" }, "forbidden"],
    [{ "content-type": "text/plain" }, "bad_request"],
    [{ "content-type": "application/x-www-form-urlencoded" }, "bad_request"],
  ]) {
    const h = { "content-type": "application/json", "x-edgemeet-dev-addr": newAddr(), "sec-fetch-site": "same-origin", ...headers };
    for (const k of Object.keys(h)) if (h[k] === null) delete h[k];
    const res = await fetch(`${BASE}/api/account/register`, { method: "POST", body, headers: h });
    const j = await res.json();
    assert.equal(j.code, code, `${JSON.stringify(headers)}: ${JSON.stringify(j)}`);
    assert.ok(j.message.length > 10);
  }
  // None of them created the account.
  const ok = await browser().req("POST", "/api/account/register", JSON.parse(body));
  assert.equal(ok.status, 201, ok.text);
  // A signed-in person's sign-out from another site does not sign them out.
  const b = browser();
  await b.req("POST", "/api/account/signin", { email: mail, password: PASSWORD });
  const forged = await b.req("POST", "/api/account/signout", {}, { "sec-fetch-site": "cross-site", origin: "https://evil.example" });
  assert.equal(forged.status, 403);
  assert.equal((await b.req("GET", "/api/account")).status, 200);
});

test("bad input is refused in words; SQL in every field is stored and returned literally", async () => {
  const b = browser();
  for (const [body, re] of [
    [{ email: "not-an-email", name: "A", password: PASSWORD }, /name@example\.com/],
    [{ email: email("short"), name: "A", password: "short" }, /at least 8/],
    [{ email: email("long"), name: "A", password: "x".repeat(129) }, /at most 128/],
    [{ email: email("blank"), name: "   ", password: PASSWORD }, /name/i],
    [{ email: email("extra"), name: "A", password: PASSWORD, admin: true }, /unknown field/],
    ["{not json", /request body/],
  ]) {
    const r = await b.req("POST", "/api/account/register", body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.code, "bad_request");
    assert.match(r.json.message, re);
  }
  const sqlName = `Robert'); DROP TABLE users;-- "x" \\ %_`;
  const sqlMail = `o'brien+${Math.random().toString(36).slice(2, 8)}'--@example.org`;
  const sqlPass = `' OR '1'='1'; --`;
  const r = await b.req("POST", "/api/account/register", { email: sqlMail, name: sqlName, password: sqlPass });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.name, sqlName);
  assert.equal(r.json.email, sqlMail);
  const me = await b.req("GET", "/api/account");
  assert.equal(me.json.name, sqlName);
  // The classic injections as credentials sign nobody in.
  for (const [e, p, status] of [
    [`' OR 1=1 --@example.org`, "anything12", 400], // (a space: not an email address)
    [`'OR'1'='1'--@example.org`, sqlPass, 401],
    [sqlMail, `anything' OR '1'='1`, 401],
    [`%@example.org`, sqlPass, 401],
  ]) {
    const s = await browser().req("POST", "/api/account/signin", { email: e, password: p });
    assert.equal(s.status, status, `${e} / ${p}: ${s.text}`);
  }
  const s = await browser().req("POST", "/api/account/signin", { email: sqlMail, password: sqlPass });
  assert.equal(s.status, 200, s.text);
  // The table is still there: someone else can register.
  assert.equal((await browser().req("POST", "/api/account/register", { email: email("after"), name: "B", password: PASSWORD })).status, 201);
});

test("a write then a read with its bookmark sees the write; the bookmark round-trips through the cookie and the header", async () => {
  const b = browser();
  const mail = email("bm");
  const r = await b.req("POST", "/api/account/register", { email: mail, name: "Bea", password: PASSWORD });
  assert.equal(r.status, 201);
  const bm = r.headers.get("x-edgemeet-d1-bookmark");
  assert.ok(bm, "a bookmark after a write");
  assert.equal(b.jar.get(BOOKMARK), bm, "the same bookmark as a cookie");
  const cookie = r.cookies.find((c) => c.startsWith(`${BOOKMARK}=`));
  assert.ok(/HttpOnly/.test(cookie) && /Path=\/api\//.test(cookie) && /Max-Age=600/.test(cookie), cookie);
  // The read carries it (cookie) and sees the write; the bookmark it gets back is not older.
  const me = await b.req("GET", "/api/account");
  assert.equal(me.status, 200);
  assert.equal(me.json.email, mail);
  // (A read moves nothing on: no new bookmark, the browser keeps its own.)
  const bm2 = me.headers.get("x-edgemeet-d1-bookmark") ?? bm;
  // A password change, then a sign-in elsewhere that carries only the header bookmark: it sees
  // the new password at once.
  const ch = await b.req("POST", "/api/account/password", { current: PASSWORD, new: "new password 42" });
  assert.equal(ch.status, 204, ch.text);
  const bm3 = ch.headers.get("x-edgemeet-d1-bookmark");
  assert.ok(bm3 > bm2, `a write moves the bookmark on: ${bm3} > ${bm2}`);
  const other = browser();
  const s = await other.req("POST", "/api/account/signin", { email: mail, password: "new password 42" }, { "x-edgemeet-d1-bookmark": bm3 });
  assert.equal(s.status, 200, s.text);
  // Garbage bookmarks are ignored (not passed to D1), and a bookmark D1 never gave is not echoed
  // back (it would stick in the cookie).
  const g = await b.req("GET", "/api/account", undefined, { "x-edgemeet-d1-bookmark": "../../etc/passwd; drop" });
  assert.equal(g.status, 200);
  assert.notEqual(g.headers.get("x-edgemeet-d1-bookmark"), "../../etc/passwd; drop");
  const z = await b.req("GET", "/api/account", undefined, { "x-edgemeet-d1-bookmark": "zzzzzzzz-zzzzzzzz" });
  assert.equal(z.status, 200);
  assert.notEqual(z.headers.get("x-edgemeet-d1-bookmark"), "zzzzzzzz-zzzzzzzz");
  assert.ok(!z.cookies.some((c) => c.includes("zzzzzzzz")), "not set as a cookie");
});

test("a password change ends every other session; the wrong current password changes nothing", async () => {
  const a = browser();
  const phone = browser();
  const mail = email("pw");
  await a.req("POST", "/api/account/register", { email: mail, name: "Cy", password: PASSWORD });
  assert.equal((await phone.req("POST", "/api/account/signin", { email: mail, password: PASSWORD })).status, 200);
  const bad = await a.req("POST", "/api/account/password", { current: "wrong one!", new: "another password" });
  assert.equal(bad.status, 401);
  assert.equal(bad.json.code, "wrong_password");
  const weak = await a.req("POST", "/api/account/password", { current: PASSWORD, new: "short" });
  assert.equal(weak.status, 400);
  assert.equal(bad.headers.get("retry-after"), null);
  assert.equal((await phone.req("GET", "/api/account")).status, 200, "nothing changed yet");
  const ok = await a.req("POST", "/api/account/password", { current: PASSWORD, new: "another password" });
  assert.equal(ok.status, 204, ok.text);
  assert.equal((await a.req("GET", "/api/account")).status, 200, "this browser stays signed in (a new session)");
  assert.equal((await phone.req("GET", "/api/account")).status, 401, "the other session ended");
  assert.equal((await browser().req("POST", "/api/account/signin", { email: mail, password: PASSWORD })).status, 401);
  assert.equal((await browser().req("POST", "/api/account/signin", { email: mail, password: "another password" })).status, 200);
});

test("wrong passwords lock the account for a while (per account), and many attempts from one address are slowed (per address)", async () => {
  const mail = email("lock");
  await browser().req("POST", "/api/account/register", { email: mail, name: "Dee", password: PASSWORD });
  // Ten wrong passwords at once, each from another address (so only the account's count is at
  // work): each counts, though they all read the account at the same moment.
  const guesses = await Promise.all([...Array(10).keys()].map((i) =>
    browser().req("POST", "/api/account/signin", { email: mail, password: `wrong ${i} password` })));
  assert.deepEqual(guesses.map((r) => r.status), Array(10).fill(401), guesses.map((r) => r.text).join("\n"));
  const locked = await browser().req("POST", "/api/account/signin", { email: mail, password: PASSWORD });
  assert.equal(locked.status, 429, "even the right password waits");
  assert.equal(locked.json.code, "too_many_requests");
  assert.match(locked.json.message, /Try again in 15 minutes/);
  const retry = Number(locked.headers.get("retry-after"));
  assert.ok(retry > 840 && retry <= 900, `Retry-After ${retry}`);
  // Another account is not affected.
  const other = email("free");
  await browser().req("POST", "/api/account/register", { email: other, name: "Eve", password: PASSWORD });
  assert.equal((await browser().req("POST", "/api/account/signin", { email: other, password: PASSWORD })).status, 200);
  // One address: at most 20 attempts a minute, whatever the accounts. (An over-long password is
  // refused before any hashing, so the 24 take milliseconds: the limiter's one-minute window,
  // aligned to the clock, is not crossed — unless it is about to end, so start in a fresh one.)
  const flood = browser();
  const statuses = [];
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 10_000) await new Promise((r) => setTimeout(r, left + 100));
  for (let i = 0; i < 24; i++) statuses.push((await flood.req("POST", "/api/account/signin", { email: email("flood"), password: "x".repeat(200) })).status);
  assert.ok(statuses.slice(0, 20).every((s) => s === 401), statuses.join(","));
  assert.ok(statuses.slice(20).every((s) => s === 429), statuses.join(","));
});

test("someone holding a session cannot guess the password through the change or delete forms", async () => {
  const b = browser();
  const mail = email("reauth");
  await b.req("POST", "/api/account/register", { email: mail, name: "Hal", password: PASSWORD });
  for (let i = 0; i < 10; i++) {
    const path = i % 2 ? "/api/account/password" : "/api/account/delete";
    const body = i % 2 ? { current: `guess number ${i}`, new: "a new password" } : { password: `guess number ${i}` };
    assert.equal((await b.req("POST", path, body)).status, 401, `guess ${i}`);
  }
  const locked = await b.req("POST", "/api/account/password", { current: PASSWORD, new: "a new password" });
  assert.equal(locked.status, 429, locked.text);
  assert.match(locked.json.message, /Too many wrong passwords/);
  assert.equal((await b.req("GET", "/api/account")).status, 200, "still signed in, nothing changed");
});

test("download my data, then delete the account: it is gone, and the address is free again", async () => {
  const b = browser();
  const mail = email("gdpr");
  await b.req("POST", "/api/account/register", { email: mail, name: "Fay", password: PASSWORD });
  const data = await b.req("GET", "/api/account/data");
  assert.equal(data.status, 200);
  assert.match(data.headers.get("content-disposition"), /attachment; filename="edgemeet-my-data\.json"/);
  assert.equal(data.json.account.email, mail);
  assert.equal(data.json.sessions.length, 1);
  assert.equal(data.json.sessions[0].this_browser, true);
  assert.ok(data.json.sessions[0].expires_at > Date.now());
  assert.ok(!data.text.includes("argon2") && !data.text.includes(b.jar.get(SESSION)), "no hash, no token in the export");
  assert.equal((await browser().req("GET", "/api/account/data")).status, 401);

  const wrong = await b.req("POST", "/api/account/delete", { password: "not it at all" });
  assert.equal(wrong.status, 401);
  assert.equal((await b.req("GET", "/api/account")).status, 200, "still there");
  const del = await b.req("POST", "/api/account/delete", { password: PASSWORD });
  assert.equal(del.status, 204, del.text);
  assert.ok(!b.jar.has(SESSION));
  assert.equal((await browser().req("POST", "/api/account/signin", { email: mail, password: PASSWORD })).status, 401);
  assert.equal((await browser().req("POST", "/api/account/register", { email: mail, name: "Fay again", password: PASSWORD })).status, 201);
});

test("measure: argon2id in workerd, sign-in p50 against an account read", async () => {
  const b = browser();
  const mail = email("time");
  const reg = await b.req("POST", "/api/account/register", { email: mail, name: "Gus", password: PASSWORD });
  assert.equal(reg.status, 201);
  const p50 = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const reads = [];
  const signins = [];
  for (let i = 0; i < 9; i++) {
    reads.push((await b.req("GET", "/api/account")).ms);
    const s = await browser().req("POST", "/api/account/signin", { email: mail, password: PASSWORD });
    assert.equal(s.status, 200);
    signins.push(s.ms);
  }
  const [r, s] = [p50(reads), p50(signins)];
  console.log(`accounts in workerd: sign-in p50 ${s.toFixed(1)} ms, account read p50 ${r.toFixed(1)} ms, so one argon2id check (19 MiB, t=2) ≈ ${(s - r).toFixed(1)} ms; register ${reg.ms.toFixed(1)} ms`);
  assert.ok(s > r, "a sign-in hashes; a read does not");
});

test("meeting defaults are saved with the account, checked in words, and read back everywhere the account is", async () => {
  const b = browser();
  const r = await b.req("POST", "/api/account/register", { email: email("def"), name: "Dee Faults", password: PASSWORD });
  assert.equal(r.status, 201, r.text);
  assert.deepEqual(r.json.meeting_defaults, { waiting_room: true, only_signed_in: false, duration_minutes: 60, time_zone: "" }, "the usual ones first");
  const mine = { waiting_room: false, only_signed_in: true, duration_minutes: 30, time_zone: " Asia/Tokyo " };
  const saved = await b.req("PUT", "/api/account/defaults", mine);
  assert.equal(saved.status, 200, saved.text);
  assert.deepEqual(saved.json.meeting_defaults, { ...mine, time_zone: "Asia/Tokyo" });
  // Read back (with the bookmark the write left: read-your-writes), and in "Download my data".
  assert.deepEqual((await b.req("GET", "/api/account")).json.meeting_defaults, saved.json.meeting_defaults);
  assert.deepEqual((await b.req("GET", "/api/account/data")).json.account.meeting_defaults, saved.json.meeting_defaults);
  for (const [bad, re] of [
    [{ ...mine, duration_minutes: 2 }, /5 minutes/],
    [{ ...mine, time_zone: "Mars/Olympus" }, /not a time zone we know/],
    [{ ...mine, duration_minutes: "long" }, /./],
  ]) {
    const res = await b.req("PUT", "/api/account/defaults", bad);
    assert.equal(res.status, 400, `${JSON.stringify(bad)}: ${res.text}`);
    assert.match(res.json.message, re);
  }
  assert.deepEqual((await b.req("GET", "/api/account")).json.meeting_defaults, saved.json.meeting_defaults, "a refusal changes nothing");
  // From another site, or signed out: nothing.
  assert.equal((await b.req("PUT", "/api/account/defaults", mine, { "sec-fetch-site": "cross-site", origin: "https://evil.example" })).status, 403);
  assert.equal((await browser().req("PUT", "/api/account/defaults", mine)).status, 401);
});
