// Meeting controls end to end, in real Chromium against the real stack: the waiting room, a
// password, lock, remove (a ban), mute-all enforced by the SFU, chat with history for a late
// joiner, raised hands in order, and ending the meeting for everyone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { browserForFile, launch, BASE, ARTIFACTS } from "./browser.mjs";
import { joinAs as joinAsIn, idOf, inbound, until, press, tile, setting } from "./call.mjs";

const browser = browserForFile();
const joinAs = (name, room) => joinAsIn(browser.context, BASE, name, room);
const newRoom = (label) => `${label}-${Math.random().toString(36).slice(2, 8)}`;

/** A page on the pre-join screen of `room` that asks to join as `name` (it may end up waiting, or
 *  refused); `context` defaults to the shared browser (one cookie jar: one "browser"). */
async function ask(name, room, { password, context = browser.context } = {}) {
  const page = await context.newPage();
  await page.goto(`${BASE}/${room}`);
  await page.getByLabel("Your name").fill(name);
  if (password) await page.getByLabel("Meeting password (if it has one)").fill(password);
  await page.getByRole("button", { name: "Join" }).click();
  return page;
}

/** Decoded frames of `fromId`'s video on `page` (0 if none arrives). */
async function framesFrom(page, fromId) {
  return (await inbound(page))[`${fromId}-video`]?.framesDecoded ?? 0;
}

test("the waiting room: a guest waits, receives nothing, and is in within 3 s of being let in", async () => {
  const room = newRoom("wait");
  const ann = await joinAs("Ann", room);
  await setting(ann, "Waiting room: a host lets each person in");
  // Another browser (the host's own browser is let back in past the waiting room).
  const guest = await launch();
  const bob = await ask("Bob", room, { context: guest });
  await bob.getByRole("heading", { name: "Waiting for the host to let you in" }).waitFor({ timeout: 10000 });
  // Waiting: no media, no participant list, no chat.
  await bob.waitForTimeout(1500);
  assert.deepEqual(await inbound(bob), {}, "nothing arrives while waiting");
  assert.equal(await bob.getByRole("group", { name: "Ann" }).count(), 0);
  // Ann is told, and lets him in from the participants panel.
  await ann.getByRole("button", { name: "Participants (1 waiting)" }).waitFor({ timeout: 5000 });
  await press(ann, "Participants (1 waiting)");
  const admitted = Date.now();
  await ann.getByRole("button", { name: "Admit Bob" }).click();
  await bob.getByRole("group", { name: "Bob (you)" }).waitFor({ timeout: 5000 });
  const annId = await idOf(bob, "Ann");
  await until(bob, "Bob decodes Ann after being let in", (s) => s[`${annId}-video`]?.framesDecoded > 0, 3000);
  console.log(`join-to-admitted: Bob decoding Ann ${Date.now() - admitted} ms after "Admit"`);
  await ann.close();
  await guest.close();
});

test("a password is asked for, checked, and lets the right people through the waiting room", async () => {
  const room = newRoom("pw");
  const ann = await ask("Ann", room, { password: "s3cret words" });
  await ann.getByRole("group", { name: "Ann (you)" }).waitFor({ timeout: 10000 });
  const guest = await launch(); // another browser: its own identity
  try {
    const bob = await ask("Bob", room, { context: guest });
    await bob.getByTestId("form-error").getByText("This meeting needs a password.").waitFor({ timeout: 5000 });
    await bob.getByLabel("Meeting password (if it has one)").fill("wrong");
    await bob.getByRole("button", { name: "Join" }).click();
    await bob.getByTestId("form-error").getByText("That password is not right.").waitFor({ timeout: 5000 });
    await bob.getByLabel("Meeting password (if it has one)").fill("s3cret words");
    await bob.getByRole("button", { name: "Join" }).click();
    // A meeting created with a password has a waiting room.
    await bob.getByRole("heading", { name: "Waiting for the host to let you in" }).waitFor({ timeout: 5000 });
    await press(ann, "Participants (1 waiting)");
    await ann.getByRole("button", { name: "Admit Bob" }).click();
    await bob.getByRole("group", { name: "Bob (you)" }).waitFor({ timeout: 5000 });
  } finally {
    await guest.close();
    await ann.close();
  }
});

test("a locked meeting turns new people away in words", async () => {
  const room = newRoom("lock");
  const ann = await joinAs("Ann", room);
  await setting(ann, "Lock the meeting: nobody new gets in");
  const guest = await launch(); // someone new (the host's own browser may come back)
  try {
    const cy = await ask("Cy", room, { context: guest });
    await cy.getByTestId("form-error").getByText("This meeting is locked.").waitFor({ timeout: 5000 });
  } finally {
    await ann.close();
    await guest.close();
  }
});

test("remove is a ban: the page says why, a rejoin is refused, and the others stop receiving them", async () => {
  const room = newRoom("remove");
  const ann = await joinAs("Ann", room);
  const guest = await launch();
  try {
    const bob = await joinAsIn(guest, BASE, "Bob", room);
    const bobId = await idOf(ann, "Bob");
    await until(ann, "Ann decodes Bob", (s) => s[`${bobId}-video`]?.framesDecoded > 0, 15000);
    await press(ann, "Participants");
    ann.once("dialog", (d) => d.accept());
    await ann.getByRole("button", { name: "Remove Bob" }).click();
    await bob.getByTestId("joined").getByText("You were removed from this meeting.").waitFor({ timeout: 5000 });
    await tile(ann, "Bob").waitFor({ state: "detached", timeout: 3000 });
    // His browser asking again is refused, and the host is not bothered.
    await bob.getByRole("button", { name: "Join" }).click();
    await bob.getByTestId("form-error").getByText("You were removed from this meeting.").waitFor({ timeout: 5000 });
    assert.equal(await ann.getByRole("button", { name: /waiting/ }).count(), 0, "nobody waits to be let in");
    // His packets no longer reach Ann (the SFU closed his session).
    const before = await inbound(ann);
    await ann.waitForTimeout(1500);
    const after = await inbound(ann);
    const key = `${bobId}-video`;
    assert.ok(!after[key] || after[key].packetsReceived - (before[key]?.packetsReceived ?? 0) < 5, JSON.stringify(after[key]));
  } finally {
    await guest.close();
    await ann.close();
  }
});

test("mute all is enforced by the SFU: a page that turns its microphone back on is not heard", async () => {
  const room = newRoom("muteall");
  const ann = await joinAs("Ann", room);
  const bob = await joinAs("Bob", room);
  const bobId = await idOf(ann, "Bob");
  const audioRate = async () => {
    const a = (await inbound(ann))[`${bobId}-audio`]?.packetsReceived ?? 0;
    await ann.waitForTimeout(1000);
    return ((await inbound(ann))[`${bobId}-audio`]?.packetsReceived ?? 0) - a;
  };
  await until(ann, "Ann hears Bob", (s) => s[`${bobId}-audio`]?.packetsReceived > 50, 15000);
  await press(ann, "Meeting settings");
  await ann.locator("aside.panel").getByLabel("and don't let them unmute themselves").check();
  await ann.locator("aside.panel").getByRole("button", { name: "Mute everyone" }).click();
  await bob.getByTestId("toasts").getByText("Ann muted you").waitFor({ timeout: 3000 });
  await bob.getByRole("button", { name: "Unmute microphone" }).waitFor({ timeout: 3000 });
  // Bob's page (as a modified page would) turns its microphone and encoder back on anyway.
  await bob.evaluate(async () => {
    for (const s of window.edgemeetPc.getSenders()) {
      if (s.track?.kind !== "audio") continue;
      s.track.enabled = true;
      const p = s.getParameters();
      p.encodings.forEach((e) => (e.active = true));
      await s.setParameters(p);
    }
  });
  const sent = await bob.evaluate(async () => {
    let n = 0;
    (await window.edgemeetPc.getStats()).forEach((s) => s.type === "outbound-rtp" && s.kind === "audio" && (n += s.packetsSent));
    return n;
  });
  await ann.waitForTimeout(500);
  const rate = await audioRate();
  console.log(`mute all: Ann receives ${rate} of Bob's audio packets per second while his page sends (${sent} sent so far)`);
  assert.ok(rate <= 2, `Bob is still heard: ${rate} packets/s`);
  // And the room refuses his unmute.
  await bob.getByRole("button", { name: "Unmute microphone" }).click();
  await bob.getByTestId("toasts").getByText("you cannot unmute yourself").waitFor({ timeout: 3000 });
  // Reloading the page (a new join and a new media session) does not undo it either.
  await bob.reload();
  await bob.getByLabel("Your name").fill("Bob");
  await bob.getByRole("button", { name: "Join" }).click();
  await bob.getByTestId("toasts").getByText("The host muted you").waitFor({ timeout: 10000 });
  await bob.getByRole("button", { name: "Unmute microphone" }).waitFor({ timeout: 3000 });
  await ann.locator(`[data-participant="${bobId}"]`).first().waitFor({ state: "detached", timeout: 5000 });
  await tile(ann, "Bob").waitFor({ timeout: 5000 });
  const bobAgain = await idOf(ann, "Bob");
  await bob.evaluate(async () => {
    const until = Date.now() + 10000;
    while (Date.now() < until) {
      const s = window.edgemeetPc?.getSenders().find((x) => x.track?.kind === "audio");
      if (s) {
        s.track.enabled = true;
        const p = s.getParameters();
        p.encodings.forEach((e) => (e.active = true));
        await s.setParameters(p);
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  await until(ann, "Ann receives Bob's new session", (s) => s[`${bobAgain}-video`]?.framesDecoded > 0, 15000);
  const sentNow = () => bob.evaluate(async () => {
    let n = 0;
    (await window.edgemeetPc.getStats()).forEach((s) => s.type === "outbound-rtp" && s.kind === "audio" && (n += s.packetsSent));
    return n;
  });
  const s0 = await sentNow();
  const a0 = (await inbound(ann))[`${bobAgain}-audio`]?.packetsReceived ?? 0;
  await ann.waitForTimeout(1000);
  const a1 = (await inbound(ann))[`${bobAgain}-audio`]?.packetsReceived ?? 0;
  const s1 = await sentNow();
  console.log(`mute all, after Bob's reload: Ann receives ${a1 - a0} of his audio packets per second while he sends ${s1 - s0}`);
  assert.ok(s1 - s0 > 20, `Bob's page is not sending audio (${s1 - s0} packets): the check below would prove nothing`);
  assert.ok(a1 - a0 <= 2, `Bob is heard again after a reload: ${a1 - a0} packets/s`);
  await ann.close();
  await bob.close();
});

test("chat: everyone, privately, as text not HTML, and a late joiner sees the history", async () => {
  const room = newRoom("chat");
  const ann = await joinAs("Ann", room);
  const bob = await joinAs("Bob", room);
  const cy = await joinAs("Cy", room);
  const log = (page) => page.locator("aside.panel").getByRole("log", { name: "Messages" });
  // The chat button says how many messages are new ("Chat (2 new)").
  // (An empty log has no size: the message box says whether the panel is open.)
  const box = (page) => page.locator("aside.panel").getByLabel("Message", { exact: true });
  const openChat = async (page) => {
    if (await box(page).isVisible()) return;
    await page.locator("nav.controls").getByRole("button", { name: /^Chat( \(\d+ new\))?$/ }).click();
    await box(page).waitFor({ timeout: 3000 });
  };
  const say = async (page, text, to) => {
    await openChat(page);
    await page.locator("aside.panel").getByLabel("To").selectOption({ label: to ? `${to} (privately)` : "Everyone" });
    await page.locator("aside.panel").getByLabel("Message", { exact: true }).fill(text);
    await page.locator("aside.panel").getByLabel("Message", { exact: true }).press("Enter");
  };
  await say(ann, "hello all, see https://example.org/x");
  await say(bob, "psst, only for Cy", "Cy");
  const xss = `<img src=x onerror="window.__pwned=1">`;
  await say(cy, xss);
  for (const [page, sees, not] of [[ann, ["hello all", xss], ["psst"]], [cy, ["hello all", "psst, only for Cy", xss], []]]) {
    await openChat(page);
    for (const t of sees) await log(page).getByText(t, { exact: false }).first().waitFor({ timeout: 5000 });
    for (const t of not) assert.equal(await log(page).getByText(t).count(), 0, `${t} leaked`);
  }
  // Text, not HTML: no image element, nothing ran; the address is a safe link.
  assert.equal(await log(ann).locator("img").count(), 0);
  assert.equal(await ann.evaluate(() => window.__pwned ?? 0), 0);
  const link = log(ann).getByRole("link", { name: "https://example.org/x" });
  assert.equal(await link.getAttribute("rel"), "noopener noreferrer");
  // A late joiner sees the conversation so far, but not what was private.
  const dee = await joinAs("Dee", room);
  await openChat(dee);
  await log(dee).getByText("hello all").waitFor({ timeout: 5000 });
  await log(dee).getByText(xss).waitFor({ timeout: 5000 });
  assert.equal(await log(dee).getByText("psst").count(), 0);
  await ann.screenshot({ path: join(ARTIFACTS, "chat.png") });
  for (const p of [ann, bob, cy, dee]) await p.close();
});

test("raised hands are listed first in the order raised; ending the meeting lets everyone go", async () => {
  const room = newRoom("hands");
  const ann = await joinAs("Ann", room);
  const bob = await joinAs("Bob", room);
  const cy = await joinAs("Cy", room);
  await press(cy, "Raise hand");
  await tile(ann, "Cy").getByTestId("hand").waitFor({ state: "visible", timeout: 3000 });
  await press(bob, "Raise hand");
  await tile(ann, "Bob").getByTestId("hand").waitFor({ state: "visible", timeout: 3000 });
  await press(ann, "Participants");
  const order = await ann.locator("aside.panel [data-testid=person] .who").allTextContents();
  assert.deepEqual(order.slice(0, 2).map((t) => t.replace("✋ ", "").trim()), ["Cy", "Bob"]);
  // A reaction shows over the sender's tile on the others' pages.
  await press(bob, "React");
  await bob.getByRole("button", { name: "React 🎉" }).click();
  await tile(ann, "Bob").getByTestId("reaction").getByText("🎉").waitFor({ timeout: 3000 });
  // End for all (with a confirmation).
  await press(ann, "Meeting settings");
  ann.once("dialog", (d) => d.accept());
  await ann.locator("aside.panel").getByRole("button", { name: "End meeting for all" }).click();
  for (const p of [bob, cy]) await p.getByTestId("joined").getByText("The host ended the meeting.").waitFor({ timeout: 5000 });
  for (const p of [ann, bob, cy]) await p.close();
});
