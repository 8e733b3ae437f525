"""A plain pycrdt reader of a pipelined room (not collected by pytest): prints the
`stories` map as one JSON line after every change, numbers read back as ints.

    python tests/yjs_reader.py ws://HOST:PORT/ROOM
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import pycrdt
from websockets.asyncio.client import connect

from pipelined.publish import FIELDS, ROOT, WebsocketChannel, values_of


async def main(url: str) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    stories = doc.get(ROOT, type=pycrdt.Map)
    changed = [True]
    doc.observe(lambda _event: changed.__setitem__(0, True))  # printed outside the commit
    async with connect(url, max_size=None) as websocket:
        channel = WebsocketChannel(websocket, url)
        async with pycrdt.Provider(doc, channel) as provider:
            await provider.synced.wait()
            while not channel.closed.is_set():
                if changed[0]:
                    changed[0] = False
                    state = {str(k): dict(zip(FIELDS, values_of(v), strict=True))
                             for k, v in stories.items()}
                    print(json.dumps({"stories": state}), flush=True)
                with anyio.move_on_after(0.02):
                    await channel.closed.wait()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
