"""SortedPartitionsBuilder.exclude with many existing leases, against a linear scan.

Computing a lease's free ranges excludes every live lease of the section from the requested
partition. LUCI keeps the pieces in a linked list and scans it from the front on every
exclusion, O(n) per exclusion; lessor binary-searches two sorted arrays, O(log n)
comparisons. This measures both on the same inputs: a partition fragmented by n existing
leases, then n more exclusions at random places.

    python benchmarks/bench_exclude.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import time

from lessor.partition import Partition, SortedPartitionsBuilder

KEY_SPACE = Partition.universe(32)


class LinearBuilder:
    """The baseline: pieces in one sorted list, scanned from the front on every exclusion."""

    def __init__(self, p: Partition) -> None:
        self.pieces = [[p.low, p.high]]

    def exclude(self, q: Partition) -> None:
        i = 0
        while i < len(self.pieces):
            low, high = self.pieces[i]
            if q.low >= high:  # piece entirely before q
                i += 1
            elif q.high <= low:  # piece entirely after q: done
                return
            elif q.low <= low:
                if q.high >= high:
                    del self.pieces[i]
                else:
                    self.pieces[i][0] = q.high
                    return
            elif q.high >= high:
                self.pieces[i][1] = q.low
                i += 1
            else:
                self.pieces.insert(i + 1, [q.high, high])
                self.pieces[i][1] = q.low
                return


def leases(n: int, rng: random.Random) -> list[Partition]:
    """n disjoint small leases spread over the key space, in random order."""
    cuts = sorted(rng.sample(range(1, 2**62), 2 * n))
    scale = KEY_SPACE.high >> 62
    out = [Partition(cuts[i] * scale, cuts[i + 1] * scale) for i in range(0, 2 * n, 2)]
    rng.shuffle(out)
    return out


def run(builder_type: type, existing: list[Partition], probes: list[Partition]) -> float:
    """Seconds per exclusion once ``existing`` are excluded."""
    b = builder_type(KEY_SPACE)
    for p in existing:
        b.exclude(p)
    start = time.perf_counter()
    for p in probes:
        b.exclude(p)
    return (time.perf_counter() - start) / len(probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    args = parser.parse_args()
    sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    repeats = 1 if args.quick else 5
    print(f"{'existing':>9} {'lessor µs':>10} {'linear µs':>10} {'speed-up':>9}")
    for n in sizes:
        rng = random.Random(n)
        existing = leases(n, rng)
        probes = leases(n, rng)
        ours = min(run(SortedPartitionsBuilder, existing, probes) for _ in range(repeats))
        linear = min(run(LinearBuilder, existing, probes) for _ in range(repeats))
        print(f"{n:>9} {ours * 1e6:>10.2f} {linear * 1e6:>10.2f} {linear / ours:>8.1f}x")


if __name__ == "__main__":
    main()
