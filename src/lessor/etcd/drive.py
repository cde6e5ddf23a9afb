"""Driving the acquisition core's steps: one loop, for the threaded and the asyncio shell.

:func:`drive` performs the operations a piece of the core (``ops.Steps``) yields, with the
shell's ``perform``, until the piece ends. The asyncio shell awaits it; the threaded shell runs
it with :func:`~lessor.etcd.calls.blocking`, its ``perform`` blocking instead of suspending.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from lessor.etcd.ops import Op, Steps

__all__ = ["drive"]


async def drive(steps: Steps, perform: Callable[[Op], Awaitable[Any]]) -> Any:
    """Perform ``steps``' operations until it ends; return what it returns.

    A failed operation is thrown into ``steps``, which handles it or lets it out. So is an
    exception that reaches the shell *between* two operations (KeyboardInterrupt, a signal
    handler's, one set by ``PyThreadState_SetAsyncExc``, a task's cancellation): whatever
    arrives while ``steps`` waits for an operation goes to ``steps``, so that the core's own
    way out runs (leaving the gate, handing the lead on, giving back what its members got).
    Only a second exception on that way out closes ``steps`` unfinished.
    """
    try:
        return await _drive(steps, perform, None)
    except BaseException as e:
        if inspect.getgeneratorstate(steps) != inspect.GEN_SUSPENDED:
            raise  # it came out of steps: steps has ended
        return await _drive(steps, perform, e)  # it arrived here, between two operations
    finally:
        steps.close()  # a no-op once steps has ended


async def _drive(
    steps: Steps, perform: Callable[[Op], Awaitable[Any]], error: BaseException | None
) -> Any:
    result: Any = None
    while True:
        try:
            while True:  # the loop's every instruction inside the try
                op = steps.send(result) if error is None else steps.throw(error)
                result, error = None, None
                result = await perform(op)
        except StopIteration as end:
            return end.value
        except BaseException as e:
            if inspect.getgeneratorstate(steps) != inspect.GEN_SUSPENDED:
                raise  # it came out of steps: steps has ended
            result, error = None, e  # the core decides what every failure means
