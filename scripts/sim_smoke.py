#!/usr/bin/env python3
"""CI smoke run of the simulator (issue #14, item 8): 10,000 virtual nodes, built directly, 300
FIND_NODE lookups on the virtual clock, seeded (so the figures are the same on every machine).

Fails when a lookup stops finding the true closest peers (exact < 95 % or recall < 99 %), when mean
hops exceed log2(N)/log2(k)+1, or when agent-sim exits non-zero, prints no valid report, or runs
past its time limit. Usage: sim_smoke.py PATH-TO-agent-sim
"""
import json
import subprocess
import sys

NODES = 10_000
ARGS = ["lookups", "--sizes", str(NODES), "--lookups", "300", "--seed", "1", "--build", "direct", "--json"]
TIME_LIMIT_S = 600


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
        table = next(t for t in report["tables"] if "exact k closest" in t["columns"])
        columns = table["columns"]
        row = next(r for r in table["rows"] if r[columns.index("N")] == NODES)
    except (ValueError, KeyError, StopIteration) as error:
        fail(f"no lookups row for N = {NODES} in the report ({error!r}): {run.stdout[:2000]}")
    figures = dict(zip(columns, row))
    exact, recall = figures["exact k closest"], figures["recall"]
    hops, theory = figures["hops mean"], figures["theory"]
    print(
        f"simulator smoke run: N = {NODES}: exact {exact:.3f}, recall {recall:.3f}, hops mean {hops} "
        f"(theory {theory}), requests mean {figures['requests mean']}; "
        f"{report['wall_seconds']:.1f} s, peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB"
    )
    if exact < 0.95:
        fail(f"only {exact:.3f} of lookups found the exact 20 closest (at least 0.95 expected)")
    if recall < 0.99:
        fail(f"recall {recall:.3f} of the 20 closest (at least 0.99 expected)")
    if hops > theory:
        fail(f"mean hops {hops} above log2(N)/log2(k)+1 = {theory}")


if __name__ == "__main__":
    main()
