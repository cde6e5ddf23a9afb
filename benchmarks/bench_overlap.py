"""How often two acquisitions of the hot scenarios (S3, S4b) compare a common key: the share of
lost swaps that striping a section (issue 14's last lever) could save at best.

Draws S3's requests as ``bench_worker.py`` does (a range 1/16 to 1/4 of the key space wide,
anywhere in it), groups them into attempts of ``--members`` requests (group commit: what one
swap carries), and reports for pairs of attempts the share that touch a common stripe when the
key space is cut into N stripes, and the share whose ranges overlap at all (exact per-key
compares: the best any striping can do). No etcd, no lessor: arithmetic on the workload.

    python benchmarks/bench_overlap.py                  # S3's widths, 3 members an attempt
    python benchmarks/bench_overlap.py --members 1      # without group commit
    python benchmarks/bench_overlap.py --widths 256,64  # ranges 1/256 to 1/64 of the space
"""

from __future__ import annotations

import argparse
import random

UNIVERSE = 1 << 20  # bench.py's key space


def _request(rng: random.Random, narrowest: int, widest: int) -> tuple[int, int]:
    width = rng.randint(UNIVERSE // narrowest, UNIVERSE // widest)
    low = rng.randrange(UNIVERSE - width)
    return low, low + width


def _stripes(ranges: list[tuple[int, int]], n: int) -> set[int]:
    size = UNIVERSE // n
    return {s for low, high in ranges for s in range(low // size, (high - 1) // size + 1)}


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    return any(x < v and u < y for x, y in a for u, v in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3, help="requests per attempt (3)")
    parser.add_argument("--widths", default="16,4", help="narrowest,widest as 1/x (16,4: S3)")
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs drawn (20000)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    narrowest, widest = (int(x) for x in args.widths.split(","))
    rng = random.Random(args.seed)
    stripes = [1, 4, 16, 64]
    common = dict.fromkeys(stripes, 0)
    exact = 0
    for _ in range(args.pairs):
        a = [_request(rng, narrowest, widest) for _ in range(args.members)]
        b = [_request(rng, narrowest, widest) for _ in range(args.members)]
        for n in stripes:
            common[n] += bool(_stripes(a, n) & _stripes(b, n))
        exact += _overlap(a, b)
    print(f"requests 1/{narrowest} to 1/{widest} of the key space, {args.members} per attempt, "
          f"{args.pairs} pairs of attempts: share that compare a common key")  # fmt: skip
    for n in stripes:
        print(f"  {n:>3} stripes: {common[n] / args.pairs:6.1%}")
    print(f"  per key (ranges overlap): {exact / args.pairs:6.1%}")


if __name__ == "__main__":
    main()
