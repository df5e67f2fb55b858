// Accounts in the page (/account) against the real edge and local D1: create an account, see it on
// the pre-join page, change the password, download my data, sign out and in, delete the account.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { browserForFile, BASE, ARTIFACTS } from "./browser.mjs";

assert.ok(BASE, "run through `cargo xtask test` (EDGEMEET_URL)");
const browser = browserForFile();

test("an account from the page: create, use on the pre-join page, change password, download data, sign out and in, delete", async () => {
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const email = `ada-${Math.random().toString(36).slice(2, 10)}@example.org`;
  const password = "analytical engine 1843";

  await page.goto(`${BASE}/account`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByRole("button", { name: "No account yet? Create one" }).click();
  await page.getByRole("heading", { name: "Create an account" }).waitFor();
  await page.getByLabel("Your name").fill("Ada Lovelace");
  await page.getByLabel("Email address").fill(email);
  // A too-short password: the server's words, shown in the form.
  await page.getByLabel("Password", { exact: true }).fill("short");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("alert").filter({ hasText: "at least 8 characters" }).waitFor();
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByTestId("signed-in-as").filter({ hasText: `Signed in as Ada Lovelace (${email})` }).waitFor();

  // The session cookie as the browser keeps it: host-only, HttpOnly, Secure, SameSite=Lax.
  const cookie = (await browser.context.cookies(BASE)).find((c) => c.name === "__Host-edgemeet-session");
  assert.ok(cookie, "the browser kept the __Host- cookie");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.sameSite, "Lax");
  assert.equal(cookie.path, "/");
  assert.equal(await page.evaluate(() => document.cookie.includes("edgemeet-session")), false, "scripts cannot read it");
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: join(ARTIFACTS, "account-1280.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(ARTIFACTS, "account-390.png"), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow} px)`);
  await page.setViewportSize({ width: 1280, height: 800 });

  // The pre-join page knows who is there and fills the name.
  await page.goto(`${BASE}/ada-s-room`);
  await page.getByTestId("account-line").filter({ hasText: "Signed in as Ada Lovelace" }).waitFor();
  await page.waitForFunction(() => document.querySelector("input[name=name]")?.value === "Ada Lovelace");
  await page.getByRole("link", { name: "Your account" }).click();
  await page.getByTestId("signed-in-as").waitFor();

  // Change password: the wrong current one is refused in words; the right one works.
  await page.getByLabel("Current password").fill("not my password");
  await page.getByLabel("New password").fill("difference engine 1822");
  await page.getByRole("button", { name: "Change password" }).click();
  await page.getByRole("alert").filter({ hasText: "not your current password" }).waitFor();
  await page.getByLabel("Current password").fill(password);
  await page.getByRole("button", { name: "Change password" }).click();
  await page.getByRole("status").filter({ hasText: "Password changed" }).waitFor();

  // Download my data: a JSON file naming the account, this browser's session marked.
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "Download my data" }).click()]);
  assert.equal(download.suggestedFilename(), "edgemeet-my-data.json");
  const data = JSON.parse(readFileSync(await download.path(), "utf8"));
  assert.equal(data.account.email, email);
  assert.equal(data.sessions.filter((s) => s.this_browser).length, 1);

  // Sign out, then in: the old password no longer works, the new one does (by keyboard).
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("Email address").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password", { exact: true }).press("Enter");
  await page.getByRole("alert").filter({ hasText: "do not match" }).waitFor();
  await page.getByLabel("Password", { exact: true }).fill("difference engine 1822");
  await page.getByLabel("Password", { exact: true }).press("Enter");
  await page.getByTestId("signed-in-as").waitFor();

  // Delete: the password again; then the account is gone.
  await page.getByLabel("Your password, to confirm").fill("difference engine 1822");
  await page.getByRole("button", { name: "Delete my account" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("Email address").fill(email);
  await page.getByLabel("Password", { exact: true }).fill("difference engine 1822");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "do not match" }).waitFor();
  assert.deepEqual(errors, []);
  await page.close();
});
