// Meeting-control figures against a running stack (EDGEMEET_URL); printed, not pass/fail. Run by
// `cargo xtask bench`:
// - password check per join in workerd (argon2id, 19 MiB, t=2): join time with the password minus
//   join time without one, p50 over 10 joins each;
// - the room object's fan-out of one chat message to 50 sockets: send → the last socket has it;
// - join → admitted: a waiting joiner let in → their room snapshot.
const BASE = process.env.EDGEMEET_URL;
if (!BASE) throw new Error("EDGEMEET_URL is not set (run through `cargo xtask bench`)");
const WS = BASE.replace(/^http/, "ws");
const p50 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.95))];
const room = (l) => `bench-${l}-${Math.random().toString(36).slice(2, 8)}`;

async function join(r, name, extra = {}) {
  const t = performance.now();
  const addr = `198.18.${Math.floor(Math.random() * 256)}.${Math.floor(Math.random() * 256)}`; // joins are limited per address
  const res = await fetch(`${BASE}/api/rooms/${r}/join`, { method: "POST", headers: { "content-type": "application/json", "x-edgemeet-dev-addr": addr }, body: JSON.stringify({ name, ...extra }) });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`join ${res.status}: ${JSON.stringify(body)}`);
  return { ms: performance.now() - t, body };
}

function open(path) {
  const ws = new WebSocket(`${WS}${path}`);
  const waiters = [];
  const frames = [];
  ws.addEventListener("message", (e) => {
    const f = JSON.parse(e.data);
    f.__at = performance.now();
    frames.push(f);
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (pred) => {
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      await new Promise((r) => waiters.push(r));
    }
  };
  return { ws, next };
}

// 1. Password checks.
const pw = room("pw");
await join(pw, "Owner", { password: "correct horse battery" }); // creates it (one hash)
const owner = open((await join(room("keep"), "x")).body.ws_url);
void owner;
const withPw = [];
const without = [];
const plain = room("plain");
for (let i = 0; i < 10; i++) {
  withPw.push((await join(pw, `P${i}`, { password: "correct horse battery" })).ms);
  without.push((await join(plain, `Q${i}`)).ms);
}
console.log(`password check per join (argon2id m=19 MiB t=2, in workerd): p50 ${(p50(withPw) - p50(without)).toFixed(1)} ms (join p50 ${p50(withPw).toFixed(1)} ms with the password, ${p50(without).toFixed(1)} ms without)`);

// 2. Chat fan-out to 50 sockets.
const fan = room("fan");
const socks = [];
for (let i = 0; i < 50; i++) {
  const s = open((await join(fan, `S${i}`)).body.ws_url);
  await s.next((f) => f.type === "snapshot");
  socks.push(s);
}
const fanouts = [];
const spreads = [];
const firsts = [];
for (let k = 0; k < 20; k++) {
  const t = performance.now();
  socks[0].ws.send(JSON.stringify({ type: "chat", text: `round ${k}`, client_id: `b${k}` }));
  const got = await Promise.all(socks.map((s) => s.next((f) => f.type === "chat_message" && f.message.text === `round ${k}`)));
  const at = got.map((f) => f.__at);
  fanouts.push(Math.max(...at) - t);
  firsts.push(Math.min(...at) - t);
  spreads.push(Math.max(...at) - Math.min(...at));
  await new Promise((r) => setTimeout(r, 250)); // under the chat rate limit
}
// The spread (first socket has it → the last has it) is the room object's loop over its 50
// sockets plus their delivery; send → first is the round trip through wrangler's dev proxy.
console.log(`chat fan-out to 50 sockets: the object's spread first → last socket p50 ${p50(spreads).toFixed(1)} ms, p95 ${p95(spreads).toFixed(1)} ms; send → first p50 ${p50(firsts).toFixed(1)} ms; send → last p50 ${p50(fanouts).toFixed(1)} ms, p95 ${p95(fanouts).toFixed(1)} ms (loopback, through wrangler's dev proxy)`);
socks.forEach((s) => s.ws.close(1000));

// 3. Join → admitted.
const w = room("wait");
const host = open((await join(w, "Host")).body.ws_url);
await host.next((f) => f.type === "snapshot");
host.ws.send(JSON.stringify({ type: "update_settings", settings: { waiting_room: true, locked: false, has_password: false, password_skips_waiting: false, may_share_screen: true, may_unmute: true, may_chat: true, may_react: true } }));
await host.next((f) => f.type === "settings");
const admits = [];
for (let i = 0; i < 10; i++) {
  const g = (await join(w, `G${i}`)).body;
  const gs = open(g.ws_url);
  await gs.next((f) => f.type === "waiting");
  await host.next((f) => f.type === "waiting_list" && f.waiting.some((x) => x.id === g.participant_id));
  const t = performance.now();
  host.ws.send(JSON.stringify({ type: "admit", id: g.participant_id }));
  const tok = await gs.next((f) => f.type === "token");
  const inside = open(`/api/rooms/${w}/ws?token=${tok.token}`);
  await inside.next((f) => f.type === "snapshot");
  admits.push(performance.now() - t);
  gs.ws.close(1000);
  inside.ws.close(1000);
}
console.log(`join → admitted ("admit" → the guest's room snapshot on its new socket): p50 ${p50(admits).toFixed(1)} ms, p95 ${p95(admits).toFixed(1)} ms`);
host.ws.close(1000);
owner.ws.close(1000);
process.exit(0);
