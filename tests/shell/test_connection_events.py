"""Connection events (``pong``) skip the store: answered at once on an idle session,
in order behind what waits to be stored otherwise."""

from __future__ import annotations

from gateway.core.events import Ping, UserMessage
from gateway.stores.memory import MemoryStore
from tests.shell.test_races import Sink, manager_on
from tests.support.faults import wait_until


async def test_a_ping_on_an_idle_session_is_answered_before_the_loop_turns() -> None:
    manager = manager_on(MemoryStore())
    sink = Sink()
    runtime, _ = await manager.start(sink)
    await wait_until(lambda: sink.types() == ["session.ready"] and runtime._pipe is None)
    runtime.receive(Ping(id=7))
    # No await in between: the pong did not wait for a pipeline task (a loop
    # iteration, 5-20 ms under load) with nothing to store before it.
    assert sink.frames[-1] == {"type": "pong", "session_id": runtime.session.id, "seq": 0, "id": 7}
    await manager.shutdown()


async def test_a_ping_behind_unstored_events_is_answered_after_them() -> None:
    manager = manager_on(MemoryStore())
    sink = Sink()
    runtime, _ = await manager.start(sink)
    await wait_until(lambda: sink.types() == ["session.ready"] and runtime._pipe is None)
    runtime.receive(UserMessage(text="Hello there", id="u1"))
    runtime.receive(Ping(id=8))
    assert "pong" not in sink.types()  # the turn's first events are still being stored
    await wait_until(lambda: "pong" in sink.types())
    types = sink.types()
    assert types.index("response.start") < types.index("pong")
    await manager.shutdown()
