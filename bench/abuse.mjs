// Abuse figures against a running stack (EDGEMEET_URL); printed, not pass/fail. Run by
// `cargo xtask bench`:
// - a join flood: 200 joins a second from one address for 10 s (2,000, bounded) while other people
//   join every 200 ms from their own addresses: the share refused with 429, and the others' join
//   time p50/p95;
// - a frame flood: one socket sending pings as fast as it can (at most 1,000): frames taken before
//   it is told to slow down, and how long until it is closed.
const BASE = process.env.EDGEMEET_URL;
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask bench`)");
const pct = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
const addr = () => `198.18.${Math.floor(Math.random() * 256)}.${Math.floor(Math.random() * 256)}`;
const room = `bench-abuse-${Math.random().toString(36).slice(2, 8)}`;
const join = (name, a) =>
  fetch(`${BASE}/api/rooms/${room}/join`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-edgemeet-dev-addr": a },
    body: JSON.stringify({ name }),
  });

const flooder = addr();
const statuses = [];
const others = [];
const started = Date.now();
const flood = (async () => {
  const inFlight = [];
  for (let i = 0; i < 2000; i++) {
    const wait = started + i * 5 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    inFlight.push(join(`F${i}`, flooder).then(async (r) => (statuses.push(r.status), await r.arrayBuffer())));
  }
  await Promise.all(inFlight);
})();
const people = (async () => {
  for (let i = 0; i < 50; i++) {
    const t = Date.now();
    const r = await join(`P${i}`, addr());
    await r.arrayBuffer();
    if (r.status === 200) others.push(Date.now() - t);
    await new Promise((res) => setTimeout(res, 200));
  }
})();
await Promise.all([flood, people]);
const refused = statuses.filter((s) => s === 429).length;
console.log(
  `join flood: ${statuses.length} joins from one address in ${((Date.now() - started) / 1000).toFixed(1)} s: ${((100 * refused) / statuses.length).toFixed(1)} % refused (429); others' joins (${others.length}/50 let in) p50 ${pct(others, 0.5)} ms, p95 ${pct(others, 0.95)} ms`,
);

const res = await join("Flooder", addr());
const { ws_url } = await res.json();
const ws = new WebSocket(`${BASE.replace(/^http/, "ws")}${ws_url}`);
let pongs = 0;
let slowDown = null;
const t0 = { v: 0 };
const closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve(e.code)));
ws.addEventListener("message", (e) => {
  const f = JSON.parse(e.data);
  if (f.type === "pong") pongs++;
  if (f.type === "error" && f.code === "too_many_requests" && slowDown === null) slowDown = Date.now() - t0.v;
});
await new Promise((r) => ws.addEventListener("open", r));
await new Promise((r) => setTimeout(r, 300)); // the snapshot
t0.v = Date.now();
for (let i = 0; i < 1000 && ws.readyState === WebSocket.OPEN; i++) ws.send(JSON.stringify({ type: "ping", nonce: i }));
const code = await Promise.race([closed, new Promise((r) => setTimeout(() => r("still open after 5 s"), 5000))]);
console.log(`frame flood: ${pongs} pings answered, told to slow down after ${slowDown} ms, closed with ${code} after ${Date.now() - t0.v} ms`);
ws.close();
