"""An exception delivered to a thread at one line of a function, the way an asynchronous one
(KeyboardInterrupt, a signal handler's, ``PyThreadState_SetAsyncExc``) arrives: raised from a
trace function's 'line' event, which is the check just before that line runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["code_lines", "raising_once_at"]


def code_lines(func: Any) -> list[int]:
    """The lines of ``func`` an exception can arrive at (those with bytecode), but its
    ``def`` line."""
    code = func.__code__
    return sorted({n for _, _, n in code.co_lines() if n is not None and n != code.co_firstlineno})


def raising_once_at(
    func: Any, line: int, error: BaseException, when: Callable[[Any], bool] = lambda frame: True
) -> tuple[Any, list[bool]]:
    """A tracer (for ``sys.settrace``) raising ``error`` once, at ``line`` of ``func``, in the
    first frame ``when`` accepts; and a list that holds True once it has fired."""
    code, fired = func.__code__, []

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == line and not fired and when(frame):
            fired.append(True)
            raise error
        return local

    return (lambda frame, event, arg: local if frame.f_code is code else None), fired
