"""Child process for the SIGKILL test: commit one batch, say so, then hang.

Run as ``python -m tests.stores.crash_child DB_PATH``. The store is never closed:
the parent kills this process while the batch sits in the WAL file.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.stores.sqlite import SqliteStore
from tests.stores.helpers import events, meta, turn

SESSION_ID = "crash"
STATE = b"state after the batch" * 100
EVENTS = events(1, 50, session_id=SESSION_ID, size=200)
TURNS = [turn("t1", session_id=SESSION_ID, status="completed", text="done")]
UPDATED_AT = 4242.0


async def main(path: str) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.create(meta(SESSION_ID), b"initial")
    await store.commit(SESSION_ID, events=EVENTS, turns=TURNS, state=STATE, updated_at=UPDATED_AT)
    sys.stdout.write("committed\n")
    sys.stdout.flush()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
