// The pre-join network check (issue 17): the page tests each path to the media server a join would get —
// UDP straight to it, the relay over UDP, the relay over TCP — and its upload, and says in plain words what will
// work. Once by itself, quietly, and on "Test my connection". In a browser that may not use UDP (Chromium's
// `disable_non_proxied_udp` policy) it says the call will be relayed over TCP — and the call then does go that way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, launch, BASE, ARTIFACTS } from "./browser.mjs";

const browser = browserForFile();

/** Connection checks' sessions every SFU made so far (`edgemeet_sfu_probes_total`, summed). */
async function probesMade() {
  const health = await (await fetch(`${BASE}/api/health`)).json();
  let total = 0;
  for (const sfu of health.sfus) {
    const text = await fetch(new URL("/metrics", sfu.url)).then((r) => r.text());
    total += Number(/^edgemeet_sfu_probes_total (\d+)/m.exec(text)?.[1] ?? 0);
  }
  return total;
}

/** The check's line once a check has finished (not "Not checked yet." nor "Checking…"). */
async function result(page, timeout = 20000) {
  const line = page.getByTestId("netcheck");
  const deadline = Date.now() + timeout;
  for (;;) {
    const t = (await line.textContent()).trim();
    if (t && !/^(Not checked yet|Checking your connection)/.test(t)) return t;
    assert.ok(Date.now() < deadline, `no check result in ${timeout} ms (last: "${t}")`);
    await page.waitForTimeout(100);
  }
}

async function details(page) {
  const d = page.locator("details.netcheck-details");
  if (!(await d.evaluate((e) => e.open))) await page.getByText("Details", { exact: true }).click();
  return (await d.locator("li").allTextContents()).map((t) => t.trim());
}

test("a bad connection check is refused in words", async () => {
  const room = `nc-${Math.random().toString(36).slice(2, 8)}`;
  const offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
  for (const [body, status, type = "application/json"] of [
    [{ offers: [] }, 400],
    [{ offers: [offer, offer, offer, offer] }, 400],
    [{ offers: ["hello"] }, 400],
    [{ nonsense: true }, 400],
    // Not JSON by its type: what a form on another site could send without asking.
    [{ offers: [offer] }, 400, "text/plain"],
  ]) {
    const res = await fetch(`${BASE}/api/rooms/${room}/probe`, {
      method: "POST",
      headers: { "content-type": type },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, status, JSON.stringify(body).slice(0, 80));
    const err = await res.json();
    assert.ok(err.code && err.message, JSON.stringify(err));
  }
});

test("the pre-join page checks the connection by itself and on request, and says video will work well", async () => {
  const room = `nc-${Math.random().toString(36).slice(2, 8)}`;
  const before = await probesMade();
  const page = await browser.context.newPage();
  await page.goto(`${BASE}/${room}`);
  // The quiet automatic run: nobody pressed anything.
  const first = await result(page);
  const afterAuto = await probesMade();
  assert.equal(afterAuto - before, 3, "one throwaway SFU session per path");
  const seen = await page.evaluate(() => window.edgemeetNetcheck);
  const lines = await details(page);
  console.log(`netcheck (loopback): ${JSON.stringify(seen)}`);
  // What the page says is what it measured.
  for (const [key, label] of [["direct", "Direct (UDP)"], ["relay_udp", "Relay over UDP"], ["relay_tcp", "Relay over TCP"]]) {
    assert.equal(seen[key].outcome, "works", `${label}: ${JSON.stringify(seen[key])}`);
    const rtt = seen[key].rtt_ms;
    assert.ok(Number.isInteger(rtt) && rtt >= 0 && rtt < 100, `${label} round trip on loopback: ${rtt} ms`);
    const words = rtt === 0 ? "under 1 ms" : `${rtt} ms`;
    assert.ok(lines.includes(`${label}: works, ${words} there and back`), `${label} in ${JSON.stringify(lines)}`);
  }
  // The words follow the figure: all three camera layers need 2.35 Mbit/s (on loopback the browser's estimate
  // reaches ~5.9 Mbit/s within a second; a busy machine's may take longer).
  assert.ok(seen.upload_kbps > 0, `upload estimate ${seen.upload_kbps} kbit/s`);
  const words = (k) => (k >= 1000 ? `${(k / 1000).toFixed(1)} Mbit/s` : `${k} kbit/s`);
  assert.equal(
    first,
    seen.upload_kbps >= 2350 ? "Video will work well." : `Video will work, in lower quality: your upload reached ${words(seen.upload_kbps)} in the test.`,
    `the automatic check says: ${first} (upload ${seen.upload_kbps} kbit/s)`,
  );
  assert.ok(lines.some((l) => l.startsWith(`Upload: at least ${words(seen.upload_kbps)}`)), JSON.stringify(lines));
  assert.ok(lines.includes("Your call will go: straight to the media server over UDP"), JSON.stringify(lines));
  assert.ok(lines.some((l) => /^Media server: \S+/.test(l)), JSON.stringify(lines));
  // Fits a phone with the details open.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 390-px phone`);
  await page.getByRole("button", { name: "Test my connection" }).scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${ARTIFACTS}/netcheck-390.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: `${ARTIFACTS}/netcheck-1280.png`, fullPage: true });
  // On request, again: the button says it is testing and cannot be pressed twice.
  const button = page.getByRole("button", { name: "Test my connection" });
  await button.click();
  await page.getByRole("button", { name: "Testing…" }).waitFor({ timeout: 2000 });
  assert.ok(await page.getByRole("button", { name: "Testing…" }).isDisabled());
  const again = await result(page);
  assert.ok(/^Video will work (well\.|, in lower quality)/.test(again), again);
  assert.equal((await probesMade()) - afterAuto, 3, "the second check made its own sessions");
  await page.close();
});

test("without UDP the check says the call will be relayed over TCP, and the call then goes that way", async () => {
  // A browser that may not use UDP (Chromium's own policy, as an administrator sets it: TCP only, no proxy here), so
  // neither its check nor its call can use UDP — whatever the page asks for.
  const context = await launch(["--webrtc-ip-handling-policy=disable_non_proxied_udp"]);
  try {
    const room = `nc-tcp-${Math.random().toString(36).slice(2, 8)}`;
    const page = await context.newPage();
    await page.goto(`${BASE}/${room}`);
    const line = await result(page);
    assert.equal(line, "UDP is blocked: we will relay your call over TCP, expect more delay.");
    const lines = await details(page);
    assert.ok(lines.includes("Direct (UDP): blocked"), JSON.stringify(lines));
    assert.ok(lines.includes("Relay over UDP: blocked"), JSON.stringify(lines));
    assert.ok(lines.some((l) => /^Relay over TCP: works, (\d+|under 1) ms there and back$/.test(l)), JSON.stringify(lines));
    assert.ok(lines.includes("Your call will go: through the relay, over TCP"), JSON.stringify(lines));
    const seen = await page.evaluate(() => window.edgemeetNetcheck);
    console.log(`netcheck (no UDP): ${JSON.stringify(seen)}`);
    assert.ok(seen.upload_kbps > 0, `an upload estimate over the TCP relay: ${seen.upload_kbps}`);
    // The prediction holds: joined (its call offered every TURN URL, UDP ones first), the media goes through the
    // relay over TCP.
    await page.getByLabel("Your name").fill("Ada");
    await page.getByRole("button", { name: "Join" }).click();
    await page.getByRole("group", { name: "Ada (you)" }).waitFor({ timeout: 10000 });
    const deadline = Date.now() + 15000;
    let path;
    for (;;) {
      path = await page.evaluate(async () => {
        const pc = window.edgemeetPc;
        if (!pc || pc.connectionState !== "connected") return null;
        const stats = [...(await pc.getStats()).values()];
        const pair = stats.find((s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded");
        const local = stats.find((s) => s.id === pair?.localCandidateId);
        return local && { type: local.candidateType, relayProtocol: local.relayProtocol };
      });
      if (path) break;
      assert.ok(Date.now() < deadline, "the call connects through the TCP relay");
      await page.waitForTimeout(100);
    }
    assert.deepEqual(path, { type: "relay", relayProtocol: "tcp" });
  } finally {
    await context.close();
  }
});
