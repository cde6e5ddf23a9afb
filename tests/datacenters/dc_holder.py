"""One datacenter's holder for ``test_losing_the_leader_s_datacenter_at_once``.

    ip netns exec <ns> python dc_holder.py '<json config>'

Prints ``{"event": "ready"}``, waits for ``go`` on stdin, then, until a second line (or the end
of stdin), leases the whole key space ``[0, universe)`` of ``section`` for ``dur`` seconds
again and again through one ``EtcdLessor`` (its own datacenter's member first). It holds
whatever it is granted for ``hold`` seconds and gives it back; when it was denied some of the
key space it waits with ``wait_free`` for a key to come free (at most ``wait_cap`` seconds)
before it asks again, and when it was granted all of it, it pauses ``pause`` seconds, so that
the others, who wait, have their turn. While any key is held by someone else (a dead holder
included), whatever comes free is asked for at once by a holder that waits.

One JSON line per event on stdout, each with ``t``, the :func:`time.monotonic` time it
happened (one clock for every process of the machine, namespaces included):

* ``granted``: ``n``, ``asked`` (when the lease was asked for), ``deadline``, ``token`` and
  ``ranges`` (empty when nothing was free);
* ``released``: ``n``, ``token`` and ``end``, when the holder stopped relying on the lease
  (just before the give-back);
* ``error``: ``n`` and ``error``, an acquisition that failed (during the leader's loss).

Exits 0 after printing ``{"event": "done"}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from lessor import Context, LessorError, Partition
from lessor.etcd import EtcdLessor

_out = threading.Lock()


def say(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields})
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(cfg: dict[str, Any]) -> int:
    lessor = EtcdLessor(cfg["endpoints"], prefix=cfg["prefix"], endpoint_order="given",
                        rpc_timeout=cfg["rpc_timeout"])  # fmt: skip
    section: str = cfg["section"]
    whole = Partition(0, cfg["universe"])
    say("ready")
    if sys.stdin.readline().strip() != "go":
        return 2
    stop = Context.background()

    def await_stop() -> None:
        sys.stdin.readline()
        stop.cancel()

    threading.Thread(target=await_stop, name="stop", daemon=True).start()
    n = 0
    while not stop.done():
        n += 1
        asked = time.monotonic()
        try:
            with lessor.lease(section, whole, cfg["dur"]) as lease:
                say("granted", n=n, asked=asked, t=time.monotonic(), deadline=lease.deadline,
                    token=lease.token, ranges=lease.partitions.to_strings())  # fmt: skip
                if lease.partitions:
                    lease.ctx.wait(cfg["hold"])
                    say("released", n=n, token=lease.token, t=time.monotonic(),
                        end=min(time.monotonic(), lease.deadline))  # fmt: skip
                denied = lease.partitions.to_strings() != [str(whole)]
        except LessorError as e:
            say("error", n=n, t=time.monotonic(), error=f"{type(e).__name__}: {e}")
            stop.wait(0.05)  # etcd has no leader yet: try again shortly
            continue
        if denied:
            lessor.wait_free(stop.with_timeout(cfg["wait_cap"]), section, whole)
        else:
            stop.wait(cfg["pause"])  # the others' turn: they wait for what was just given back
    lessor.close()
    say("done", t=time.monotonic())
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
