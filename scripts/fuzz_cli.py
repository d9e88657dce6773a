"""Run the command-line fuzzer (tests/fuzz_cli.py) over every shipped config: wrong values for every
argument, each run in process with a small data set and ``fast_dev_run``.

    python scripts/fuzz_cli.py [--seed N] [--limit N] [--config NAME ...] [--jobs N]

Each failure is printed as it happens (the command and what went wrong); at the end, the number of
commands per config and outcome (exit 0, exit 2, failure). Exit status 1 when any case failed.
``--limit`` runs a seeded sample spread over the configs; ``--jobs`` runs cases in that many processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz_cli import Case, Result, Workspace, cases, sample

_workspace: Workspace | None = None


def _start_worker(root: str) -> None:
    """Each worker process: test-made CIFAR files accepted, and a workspace of its own."""
    global _workspace
    from tests.lesson_data import bypass_cifar_integrity

    bypass_cifar_integrity()
    folder = Path(tempfile.mkdtemp(prefix="worker_", dir=root))
    _workspace = Workspace(folder)


def _run(case: Case) -> tuple[Case, str, str | None, float, str, list[str]]:
    assert _workspace is not None
    try:
        result: Result = _workspace.run(case)
    except Exception as error:  # the fuzzer's own fault: reported with the case, and the run goes on
        return case, "failure", f"the fuzzer failed: {type(error).__name__}: {error}", 0.0, "", []
    return case, result.outcome, result.problem, result.seconds, result.error_line, result.args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (with --limit)")
    parser.add_argument("--limit", type=int, default=None, help="run a seeded sample of this many")
    parser.add_argument("--config", nargs="+", default=None, help="only these configs (names)")
    parser.add_argument("--jobs", type=int, default=1, help="processes running cases")
    parser.add_argument("--show-errors", action="store_true", help="print every exit-2 error line too")
    parser.add_argument(
        "--match", nargs="+", default=None, help="only cases whose id (config:key=label) holds one of these"
    )
    options = parser.parse_args(argv)

    started = time.perf_counter()
    every = cases(options.config)
    if options.match:
        every = [case for case in every if any(text in case.id for text in options.match)]
    chosen = sample(every, options.limit, options.seed) if options.limit else every
    print(f"{len(chosen)} commands of {len(every)} ({time.perf_counter() - started:.0f} s to generate)")
    counts: Counter[tuple[str, str]] = Counter()
    seconds: Counter[str] = Counter()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="fuzz_cli_") as root:
        if options.jobs > 1:
            context = multiprocessing.get_context("spawn")
            pool = context.Pool(options.jobs, initializer=_start_worker, initargs=(root,))
            results = pool.imap_unordered(_run, chosen)
        else:
            pool = None
            _start_worker(root)
            results = map(_run, chosen)
        for done, (case, outcome, problem, took, line, args) in enumerate(results, 1):
            counts[case.config, outcome] += 1
            seconds[outcome] += took
            if problem:
                failures += 1
                command = f"python -m experiments {shlex.join(args)}"
                print(f"FAIL {case.id}\n  $ {command}\n  {problem}", flush=True)
            elif options.show_errors and line:
                print(f"ok   {case.id}: {line}", flush=True)
            if done % 100 == 0:
                print(f"... {done}/{len(chosen)} ({time.perf_counter() - started:.0f} s)", flush=True)
        if pool is not None:
            pool.close()
            pool.join()

    outcomes = ("exit 0", "exit 2", "failure")
    print(f"\n{'config':<24}" + "".join(f"{o:>10}" for o in outcomes) + f"{'total':>10}")
    for name in sorted({config for config, _ in counts}):
        row = [counts[name, o] for o in outcomes]
        print(f"{name:<24}" + "".join(f"{n:>10}" for n in row) + f"{sum(row):>10}")
    totals = [sum(counts[c, o] for c, _ in counts if _ == o) for o in outcomes]
    print(f"{'all':<24}" + "".join(f"{n:>10}" for n in totals) + f"{sum(totals):>10}")
    for outcome in outcomes:
        n = sum(counts[c, o] for c, o in counts if o == outcome)
        if n:
            print(f"mean time, {outcome}: {seconds[outcome] / n:.2f} s")
    print(f"{failures} failures in {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
