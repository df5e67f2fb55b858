"""Tries to relay through coturn to each peer given, with real TURN credentials (aioice, from PyPI).

Usage: turn_peers.py HOST PORT USERNAME PASSWORD PEER_IP:PORT...
Prints one JSON object: peer -> "allowed" or "refused <code> <reason>". A CreatePermission (here a
ChannelBind, which implies one) is what coturn checks against its peer rules.
"""
import asyncio
import json
import sys

from aioice import stun, turn


async def main() -> None:
    host, port, username, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol, (host, port), username, password
    )
    inner = transport._TurnTransport__inner_protocol  # the client protocol (aioice has no public handle)
    results = {}
    for i, peer in enumerate(sys.argv[5:]):
        ip, p = peer.rsplit(":", 1)
        try:
            await asyncio.wait_for(inner.channel_bind(0x4000 + i, (ip, int(p))), 5)
            results[peer] = "allowed"
        except stun.TransactionFailed as e:
            code, reason = e.response.attributes.get("ERROR-CODE", (0, ""))
            results[peer] = f"refused {code} {reason}"
        except Exception as e:  # timeouts and the like: not a permission
            results[peer] = f"refused {type(e).__name__}"
    transport.close()
    print(json.dumps(results))


asyncio.run(main())
