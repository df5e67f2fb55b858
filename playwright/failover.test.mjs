// Failover and drain: kill -9 (or SIGTERM) the room's SFU in a three-page call. The pages report
// their media stopping, the Room Durable Object finds the SFU gone (or draining) and moves the room
// to the next best one, and every page sets its media up again there. The tests print how long that
// took (goal < 3 s) and fail above 8 s. The test stack restarts a killed SFU after 3 s, so later
// tests see all three regions again. `cargo xtask test` runs this file three times in a row.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForFile, BASE } from "./browser.mjs";
import { moveAfter, allLive, exited } from "./call.mjs";

const browser = browserForFile();

test("kill -9 of the room's SFU: every page decodes remote video again on another SFU", async () => {
  const r = await moveAfter({
    context: browser.context,
    base: BASE,
    signal: "SIGKILL",
    label: "failover",
    // The room itself is untouched: members and host.
    check: async (pages) => {
      for (const p of pages) await p.getByTestId("room-status").getByText("3 in the room").waitFor({ timeout: 2000 });
      await pages[1].getByRole("group", { name: "P1", exact: true }).getByText("Host", { exact: true }).waitFor({ timeout: 2000 });
    },
  });
  console.log(`failover: remote video decoding again on every page ${r.worst} ms after kill -9 of ${r.from}, now on ${r.to} (pages: ${r.back.join(", ")} ms)`);
  assert.ok(r.worst < 8000);
});

// What turned CI red: a room's first SFU had just been killed, so the room moved at once; the drain
// notice of the SFU it moved to came seconds later and was taken for a stale report. The drain
// below lands right after a move, inside that window: the room must move again, not stay behind.
test("SIGTERM right after a failover moves the room again before that SFU exits", async () => {
  await allLive(BASE);
  const [kill, drain] = await moveAfter({
    context: browser.context,
    base: BASE,
    signals: ["SIGKILL", "SIGTERM"],
    label: "kill-drain",
  });
  console.log(`kill then drain: ${kill.from} killed → ${kill.to} after ${kill.worst} ms; ${drain.from} drained → ${drain.to} after ${drain.worst} ms`);
  assert.notEqual(kill.to, kill.from);
  assert.notEqual(drain.to, drain.from, "a draining SFU keeps no room");
  assert.notEqual(drain.to, kill.from, "not back on the SFU that was just killed");
  // The room ends its sessions on the drained SFU as it leaves: the SFU exits at once, not at its
  // 10 s limit.
  await exited(drain.pid, 5000);
});

// Straight after the test above, as in CI: SFUs it stopped may still be restarting (the registry
// must not hand a new room one that a room just found dead).
test("SIGTERM drains the room's SFU: the call moves to another SFU before it exits", async () => {
  const r = await moveAfter({ context: browser.context, base: BASE, signal: "SIGTERM", label: "drain" });
  console.log(`drain: remote video decoding again on every page ${r.worst} ms after SIGTERM to ${r.from}, now on ${r.to} (pages: ${r.back.join(", ")} ms)`);
  assert.notEqual(r.to, r.from, "a draining SFU keeps no room");
  await exited(r.pid, 5000);
});
