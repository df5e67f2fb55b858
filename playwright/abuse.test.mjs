// Malformed datagrams at a live SFU: while two pages are in a call, a test client sends junk to the
// UDP port the SFU uses for one of them — broken RTP (padding longer than the packet, header
// extensions past the end, 15 CSRCs in 20 bytes), broken RTCP, STUN with bad lengths, DTLS
// records out of nowhere, empty and oversized datagrams — bounded in count and time, loopback
// only. The SFU must not fall over and both pages must keep decoding each other.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { browserForFile, BASE } from "./browser.mjs";
import { joinAs, inbound, until, mediaReport, sfuMediaAddr } from "./call.mjs";

const browser = browserForFile();

/** Datagram `i` of the junk mix: deterministic, every kind the SFU's demultiplexer might meet. */
function junk(i) {
  const rnd = (n) => {
    const b = Buffer.alloc(n);
    for (let k = 0; k < n; k++) b[k] = (i * 131 + k * 29 + ((i * k) >> 3)) & 0xff;
    return b;
  };
  const ssrc = [0x11223344, 0, 0xffffffff][i % 3];
  switch (i % 12) {
    case 0: return Buffer.alloc(0);
    case 1: { // RTP, padding bit, padding count larger than the packet
      const b = rnd(24); b[0] = 0xa0; b[1] = 96; b.writeUInt32BE(ssrc, 8); b[23] = 0xff; return b;
    }
    case 2: { // RTP, extension header claiming 0xffff words
      const b = rnd(20); b[0] = 0x90; b[1] = 96; b.writeUInt32BE(ssrc, 8); b.writeUInt16BE(0xbede, 12); b.writeUInt16BE(0xffff, 14); return b;
    }
    case 3: { // RTP, 15 CSRCs in 20 bytes
      const b = rnd(20); b[0] = 0x8f; b[1] = 111; return b;
    }
    case 4: { // RTCP SR with a length far past the datagram
      const b = rnd(12); b[0] = 0x80; b[1] = 200; b.writeUInt16BE(0xffff, 2); return b;
    }
    case 5: { // RTCP compound: RR then a NACK/PLI with zero length
      const b = rnd(16); b[0] = 0x81; b[1] = 201; b.writeUInt16BE(1, 2); b[8] = 0x81; b[9] = 206; b.writeUInt16BE(0, 10); return b;
    }
    case 6: { // STUN binding request, magic cookie, attribute length past the end
      const b = rnd(28); b.writeUInt16BE(0x0001, 0); b.writeUInt16BE(8, 2); b.writeUInt32BE(0x2112a442, 4); b.writeUInt16BE(0x0006, 20); b.writeUInt16BE(0x7fff, 22); return b;
    }
    case 7: { // STUN with a length not a multiple of 4 and a bogus USERNAME
      const b = rnd(23); b.writeUInt16BE(0x0001, 0); b.writeUInt16BE(3, 2); b.writeUInt32BE(0x2112a442, 4); return b;
    }
    case 8: { // DTLS handshake record, length past the end
      const b = rnd(13); b[0] = 22; b[1] = 0xfe; b[2] = 0xfd; b.writeUInt16BE(0xffff, 11); return b;
    }
    case 9: { // DTLS application data on an unknown epoch
      const b = rnd(60); b[0] = 23; b[1] = 0xfe; b[2] = 0xfd; b.writeUInt16BE(47, 11); return b;
    }
    case 10: return rnd(1 + (i % 1400)); // anything
    default: { // a near-maximum datagram of RTP-looking junk
      const b = rnd(1500); b[0] = 0x80; b[1] = 96; return b;
    }
  }
}

test("junk datagrams at the SFU's media port: no crash, and the call goes on", async () => {
  const room = `junk-${Math.random().toString(36).slice(2, 8)}`;
  const ada = await joinAs(browser.context, BASE, "Ada", room);
  const bob = await joinAs(browser.context, BASE, "Bob", room);
  const bothDecoding = async (what) => {
    for (const [p, other] of [[ada, "Bob"], [bob, "Ada"]]) {
      const before = await until(p, `${what}: video from ${other}`, (s) => Object.values(s).some((x) => x.kind === "video" && x.framesDecoded > 0), 15000);
      const frames = (s) => Object.values(s).filter((x) => x.kind === "video").reduce((a, x) => a + x.framesDecoded, 0);
      await until(p, `${what}: new frames from ${other}`, (s) => frames(s) > frames(before) + 10, 5000).catch(async (e) => {
        throw new Error(`${e.message}\n${await mediaReport(p)}`);
      });
    }
  };
  await bothDecoding("before");
  const target = await sfuMediaAddr(ada);
  assert.ok(target, "Ada's media goes to some SFU address");
  assert.match(target.address, /^127\./, "loopback only");
  // 20,000 datagrams (bounded), at most 10 s, to the SFU's socket for Ada.
  const sock = dgram.createSocket("udp4");
  const started = Date.now();
  let sent = 0;
  for (let i = 0; i < 20000 && Date.now() - started < 10000; i++) {
    await new Promise((res) => sock.send(junk(i), target.port, target.address, () => res()));
    sent++;
    if (i % 200 === 199) await new Promise((res) => setTimeout(res, 5));
  }
  sock.close();
  console.log(`junk: ${sent} datagrams to ${target.address}:${target.port} in ${Date.now() - started} ms`);
  // The SFU is still there and both still decode each other.
  const health = await (await fetch(`${BASE}/api/health`)).json();
  assert.equal(health.live_sfus, 3, JSON.stringify(health.sfus));
  await bothDecoding("after");
  await ada.close();
  await bob.close();
});
