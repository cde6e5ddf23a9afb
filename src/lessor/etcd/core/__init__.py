"""The acquisition core of the etcd lessor: every decision, and no I/O.

What to read, what to compare, what to write and who gets what are decided here, by
generators that yield operations (``ops.py``) and receive their results. The threaded shell
(``shell.py``, driven by ``lessor.py``) performs them over gRPC, and the asyncio shell
(``aio_shell.py``, driven by ``aio_lessor.py``) awaits them; the model-based test
(``tests/test_acquisition_model.py``) performs them on an in-memory etcd, one step at a time,
in the orders hypothesis chooses. The core reads time only from ``Config.clock``.

One mechanism a module:

* ``member.py``: one acquisition (:class:`Member`), its grant's handle (:class:`Held`), and
  what the core knows of its lessor (:class:`Config`).
* ``acquire.py``: one acquisition, from joining the section's gate until its grant: waiting
  for its turn, leading, and its way out if an exception reaches it.
* ``lead.py``: leading the section's gate, making attempts for everyone queued, and every way
  out of the gate (withdrawal, departure, orphans).
* ``attempt.py``: one attempt: read, adopt, plan, and one compare-and-swap for the group.
* ``abandon.py``: an acquisition that ends without ranges: give back its etcd lease, or
  abandon it (tombstones and clean-ups) when a swap of its may still commit.
* ``release.py``: the end of a grant: its release (riding the leader's next swap when one
  leads), its expiry at the deadline, and the marker deletion's fail-over.

How long to wait between attempts, and which failures are worth another, is ``retry.py``'s;
who gets which ranges is ``plan.py``'s; what the process knows of the section, ``known.py``'s.
"""

from lessor.etcd.core.abandon import clean_up, fail
from lessor.etcd.core.acquire import NOTICE, acquire
from lessor.etcd.core.attempt import SectionFull, group_commit
from lessor.etcd.core.lead import MAX_GROUP, give_up, lead, orphaned, withdraw
from lessor.etcd.core.member import Config, Conflict, Held, Member
from lessor.etcd.core.release import Boarding, expire, release

__all__ = [
    "MAX_GROUP",
    "NOTICE",
    "Boarding",
    "Config",
    "Conflict",
    "Held",
    "Member",
    "SectionFull",
    "acquire",
    "clean_up",
    "expire",
    "fail",
    "give_up",
    "group_commit",
    "lead",
    "orphaned",
    "release",
    "withdraw",
]
