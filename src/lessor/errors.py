"""The exceptions lessor raises: one hierarchy under :class:`LessorError`.

Bad arguments are plain :class:`TypeError` / :class:`ValueError`, raised before anything
reaches a backend. Everything a backend or a context can report derives from
:class:`LessorError`; :class:`Transient` marks the failures worth retrying later.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "ContextError",
    "CorruptSection",
    "DeadlineExceeded",
    "LessorError",
    "LessorNotRegistered",
    "PermissionDenied",
    "Transient",
    "Unavailable",
]


class LessorError(Exception):
    """Base of every error lessor raises on purpose."""


class ContextError(LessorError):
    """The caller's :class:`~lessor.Context` ended before the operation could complete."""


class DeadlineExceeded(ContextError, TimeoutError):
    """The context's deadline passed (Go's ``context.DeadlineExceeded``)."""


class Cancelled(ContextError):
    """The context was cancelled (Go's ``context.Canceled``)."""


class LessorNotRegistered(LessorError, LookupError):
    """No lessor is registered under the requested id."""


class Transient(LessorError):
    """A failure that may pass: retrying later with a fresh deadline can succeed."""


class Unavailable(Transient):
    """The backend could not be reached, or could not answer, before the deadline."""


class CorruptSection(LessorError):
    """A section's stored value cannot be decoded; it is left untouched."""


class PermissionDenied(LessorError, PermissionError):
    """The backend refused the operation for lack of permission."""
