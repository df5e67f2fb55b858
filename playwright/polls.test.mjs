// Polls end to end, in real Chromium against the real stack: the host writes and launches a poll,
// the others are offered it in a banner and vote, the host sees the counts live, a second tab of a
// browser that voted cannot vote again, shared results reach everyone, an ended poll takes no more
// votes, and a late joiner sees it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE } from "./browser.mjs";
import { joinAs as joinAsIn, person as personIn, press } from "./call.mjs";

const browser = browserForFile();

/** Joins as `name` as a browser of its own (one vote, one recording's access, is per browser). */
const person = (name, room) => personIn(browser.context, BASE, name, room);

/** The poll in `page`'s polls panel whose question is `q`. */
const card = (page, q) => page.locator("aside.panel").getByRole("listitem").filter({ has: page.getByRole("heading", { name: q, exact: true }) });

/** The results line of `option` in `page`'s card for `q` (e.g. "Oslo 2 votes · 67%"). */
async function result(page, q, option) {
  const line = card(page, q).getByTestId("poll-result").filter({ hasText: option });
  return (await line.innerText()).replace(/\s+/g, " ").trim();
}

test("a poll: launched by the host, three votes counted live, one vote per browser, shared, ended, seen by a late joiner", async () => {
  const room = `poll-${Math.random().toString(36).slice(2, 8)}`;
  const Q = "Where shall we meet?";
  const ann = await person("Ann", room);
  const bob = await person("Bob", room);
  const cy = await person("Cy", room);

  // Ann writes the poll in the Polls panel (under More) and launches it.
  await press(ann.page, "Polls");
  const form = ann.page.locator("aside.panel").getByRole("form", { name: "New poll" });
  await form.getByRole("textbox", { name: "Question" }).fill(Q);
  await form.getByRole("textbox", { name: "Option 1", exact: true }).fill("Lisbon");
  await form.getByRole("textbox", { name: "Option 2", exact: true }).fill("Oslo");
  await form.getByRole("button", { name: "Add option" }).click();
  await form.getByRole("textbox", { name: "Option 3", exact: true }).fill("Riga");
  await form.getByRole("button", { name: "Launch poll" }).click();
  await card(ann.page, Q).waitFor({ timeout: 5000 });
  // Cy has a second tab open (the same browser) before anyone votes.
  await browser.context.addCookies(cy.cookies);
  const cyTab = await joinAsIn(browser.context, BASE, "Cy", room);
  await browser.context.clearCookies();

  // Bob and Cy are offered the poll in a banner, and vote from the panel it opens.
  for (const [p, choice] of [[bob.page, "Oslo"], [cy.page, "Lisbon"]]) {
    const banner = p.getByRole("region", { name: "New poll" });
    await banner.getByText(`Ann started a poll: ${Q}`).waitFor({ timeout: 5000 });
    await banner.getByRole("button", { name: "Answer the poll" }).click();
    await card(p, Q).getByLabel(choice).check();
    await card(p, Q).getByRole("button", { name: `Vote: ${Q}` }).click();
    await card(p, Q).getByText(`You voted: ${choice}.`).waitFor({ timeout: 5000 });
    // Not shared yet: a participant sees no results.
    assert.equal(await card(p, Q).getByRole("list", { name: `Results: ${Q}` }).count(), 0);
  }
  // Ann votes too; her results are live, with names (a named poll).
  await card(ann.page, Q).getByLabel("Oslo").check();
  await card(ann.page, Q).getByRole("button", { name: `Vote: ${Q}` }).click();
  await card(ann.page, Q).getByText("3 people voted").waitFor({ timeout: 5000 });
  assert.match(await result(ann.page, Q, "Lisbon"), /^Lisbon 1 vote · 33% Cy$/);
  assert.match(await result(ann.page, Q, "Oslo"), /^Oslo 2 votes · 67% (Ann, Bob|Bob, Ann)$/);
  assert.match(await result(ann.page, Q, "Riga"), /^Riga 0 votes · 0%$/);

  // Cy's other tab: this browser has voted, so it shows Cy's vote and offers no ballot.
  await press(cyTab, "Polls");
  await card(cyTab, Q).getByText("You voted: Lisbon.").waitFor({ timeout: 5000 });
  assert.equal(await card(cyTab, Q).getByRole("button", { name: `Vote: ${Q}` }).count(), 0);
  assert.equal(await cyTab.getByRole("region", { name: "New poll" }).isVisible(), false);

  // Shared: everyone sees the counts. Ended: nobody can vote any more.
  await card(ann.page, Q).getByRole("button", { name: `Share results: ${Q}` }).click();
  await card(bob.page, Q).getByText("Everyone sees these results.").waitFor({ timeout: 5000 });
  assert.match(await result(bob.page, Q, "Oslo"), /^Oslo 2 votes · 67%/);
  await card(ann.page, Q).getByRole("button", { name: `End poll: ${Q}` }).click();
  await card(cy.page, Q).getByText("By Ann · ended").waitFor({ timeout: 5000 });

  // A late joiner: no banner for an ended poll, and the panel shows it with its results.
  const dee = await person("Dee", room);
  await press(dee.page, "Polls");
  await card(dee.page, Q).getByText("By Ann · ended").waitFor({ timeout: 5000 });
  assert.match(await result(dee.page, Q, "Lisbon"), /^Lisbon 1 vote · 33%/);
  assert.equal(await card(dee.page, Q).getByRole("button", { name: `Vote: ${Q}` }).count(), 0);
  assert.equal(await dee.page.getByRole("region", { name: "New poll" }).isVisible(), false);

  for (const p of [ann.page, bob.page, cy.page, cyTab, dee.page]) await p.close();
});
