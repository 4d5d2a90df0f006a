#!/usr/bin/env python3
"""CI smoke run of the simulator (issue #14, item 8): 10,000 virtual nodes, built directly, 300
FIND_NODE lookups on the virtual clock, seeded (so the figures are the same on every machine).

Reads the report's `results` (one object per network size; `success_rate` is the share of lookups
that found exactly the true 20 closest). Fails when a lookup stops finding the true closest peers
(success < 95 % or recall < 99 %), when mean hops exceed log2(N)/log2(k)+1, or when agent-sim exits
non-zero, prints no valid report, misses a field of the --json contract, or runs past its time
limit. Usage: sim_smoke.py PATH-TO-agent-sim
"""
import json
import subprocess
import sys

NODES = 10_000
ARGS = ["lookups", "--sizes", str(NODES), "--lookups", "300", "--seed", "1", "--build", "direct", "--json"]
TIME_LIMIT_S = 600
# Figures every result object has (issue #14, "Contract for agent-sim"); lookups add the others read here.
CONTRACT = ("nodes", "success_rate", "hops_median", "hops_mean", "messages_mean", "recall", "hops_theory")


def fail(message: str) -> None:
    print(f"simulator smoke run: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: sim_smoke.py PATH-TO-agent-sim")
    command = [sys.argv[1]] + ARGS
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        fail(f"{' '.join(command)} ran longer than {TIME_LIMIT_S} s")
    if run.returncode != 0:
        fail(f"{' '.join(command)} exited with {run.returncode}: {run.stderr.strip()[-2000:]}")
    try:
        report = json.loads(run.stdout)
        result = next(r for r in report["results"] if r["nodes"] == NODES)
        missing = [name for name in CONTRACT if not isinstance(result.get(name), (int, float))]
        missing += [name for name in ("wall_seconds", "peak_rss_bytes") if not isinstance(report.get(name), (int, float))]
    except (ValueError, KeyError, TypeError, StopIteration) as error:
        fail(f"no lookups result for N = {NODES} in the report ({error!r}): {run.stdout[:2000]}")
    if missing:
        fail(f"the report lacks {', '.join(missing)} (issue #14's --json contract): {run.stdout[:2000]}")
    exact, recall = result["success_rate"], result["recall"]
    hops, theory = result["hops_mean"], result["hops_theory"]
    print(
        f"simulator smoke run: N = {NODES}: exact {exact:.3f}, recall {recall:.3f}, hops mean {hops:.2f} "
        f"(median {result['hops_median']}, theory {theory:.2f}), messages mean {result['messages_mean']:.1f}; "
        f"{report['wall_seconds']:.1f} s, peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB"
    )
    if exact < 0.95:
        fail(f"only {exact:.3f} of lookups found the exact 20 closest (at least 0.95 expected)")
    if recall < 0.99:
        fail(f"recall {recall:.3f} of the 20 closest (at least 0.99 expected)")
    if hops > theory:
        fail(f"mean hops {hops:.2f} above log2(N)/log2(k)+1 = {theory:.2f}")

if __name__ == "__main__":
    main()
