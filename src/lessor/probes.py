"""What ``wait_free`` and ``is_held`` decide without their backend, for the sync
:class:`~lessor.contract.Lessor` and the asyncio :class:`~lessor.aio.AsyncLessor` alike.

Both methods check their arguments as ``lease`` does, answer at once when the backend has
nothing to add (a done context, an empty ``part``), and read a context error raised inside
the backend by whether the caller's context ended. The rules are stated in
:mod:`lessor.contract`; this module is internal.
"""

from __future__ import annotations

from lessor import checks
from lessor.context import Context
from lessor.errors import ContextError
from lessor.partition import Partition

__all__ = ["cannot_tell", "freed", "is_held_at_once", "unless_ended", "wait_free_at_once"]


def _arguments(ctx: Context, section_id: str, part: Partition) -> None:
    checks.context(ctx)
    checks.section_id(section_id)
    checks.partition(part, "part")


def wait_free_at_once(ctx: Context, section_id: str, part: Partition) -> bool | None:
    """Check ``wait_free``'s arguments; return its answer when no backend is needed (False:
    ``ctx`` is done; True: an empty ``part``, nothing of which can be held), else None."""
    _arguments(ctx, section_id, part)
    if ctx.done():
        return False
    if part.is_empty():
        return True
    return None


def freed(ctx: Context, backend_says: bool) -> bool:
    """``wait_free``'s answer, given its backend's: never True once ``ctx`` is done."""
    return backend_says and not ctx.done()


def unless_ended(ctx: Context, error: ContextError) -> bool:
    """``wait_free``'s answer when its backend raised ``error``: False when the caller's
    ``ctx`` ended (its end surfaced inside the backend), else ``error`` is raised (a context
    of the backend's own, such as an RPC's deadline)."""
    if ctx.done():
        return False
    raise error


def is_held_at_once(ctx: Context, section_id: str, part: Partition) -> bool | None:
    """Check ``is_held``'s arguments and raise ``ctx``'s error when it is done; return False
    for an empty ``part`` (nothing of it can be held), else None: the backend must look."""
    _arguments(ctx, section_id, part)
    ctx.raise_if_done()
    if part.is_empty():
        return False
    return None


def cannot_tell(lessor: str, backend: str, hook: str) -> NotImplementedError:
    """The error of a backend (class ``lessor``, named ``backend``) that does not implement
    ``hook``, the ``_is_held`` of its base class."""
    return NotImplementedError(
        f"the {lessor} lessor ({backend!r} backend) cannot tell what is held: it does not "
        f"implement {hook}"
    )
