"""Benchmark what importing worldflow costs (run by hand, prints figures).

    python bench/bench_import.py [--repeat N] [--no-bytecode]

Each sample is a fresh interpreter running ``python -X importtime -c "import X"``;
the figure is the cumulative time of X's own line (the best of N, and the
median). Figures:

- ``import worldflow``: what a module that defines workflows and steps pays;
- ``import asyncio`` then ``import worldflow``: what worldflow adds to a process
  that runs asyncio anyway (every process that runs workflows does);
- ``import worldflow.world`` after asyncio: the seam, which every World
  imports (a Lambda handler's init pays it);
- ``import worldflow.worlds.local``, and ``wf.start``'s first-call imports
  (``worldflow._api``): what running the local world adds.

By default bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, warmed by
one import first) as an installed package's is; ``--no-bytecode`` compiles
worldflow's modules from source each time (``PYTHONDONTWRITEBYTECODE``, the
standard library's bytecode where it is installed), which is what a checkout
run with that variable set pays. On a machine shared with
other work, take the best figure: the others only add noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile


def import_times(code: str, env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Run ``code`` under -X importtime: {module: (self us, cumulative us)}."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    times: dict[str, tuple[int, int]] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|")
        times[name.strip()] = (int(self_us), int(cumulative))
    return times


def measure(label: str, code: str, module: str, env: dict[str, str], repeat: int) -> None:
    samples = [import_times(code, env) for _ in range(repeat)]
    figures = [s[module][1] / 1000 for s in samples]
    best = min(range(repeat), key=lambda i: figures[i])
    print(f"{label:<54} best {figures[best]:6.1f} ms   median {statistics.median(figures):6.1f} ms")
    return None


def heaviest(code: str, env: dict[str, str], repeat: int, top: int) -> None:
    """The modules with the largest self time in the fastest of ``repeat`` samples."""
    runs = [import_times(code, env) for _ in range(repeat)]
    fastest = min(runs, key=lambda t: sum(v[0] for v in t.values()))
    total = sum(v[0] for v in fastest.values()) / 1000
    print(f"\nheaviest modules (self time) of `{code}`, {total:.1f} ms in all:")
    for name, (self_us, _) in sorted(fastest.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {self_us / 1000:6.1f} ms  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="samples per figure")
    parser.add_argument("--no-bytecode", action="store_true", help="compile from source")
    parser.add_argument("--top", type=int, default=12, help="heaviest modules to list")
    options = parser.parse_args()

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cache = tempfile.mkdtemp(prefix="worldflow-pyc-")
    if options.no_bytecode:  # the standard library's own bytecode is still used
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:  # write the bytecode once, as installing a package does
        env["PYTHONPYCACHEPREFIX"] = cache
        subprocess.run(
            [sys.executable, "-c", "import worldflow.worlds.local, worldflow._api"],
            env=env,
            check=True,
        )
    mode = "worldflow compiled from source" if options.no_bytecode else f"bytecode in {cache}"
    print(f"Python {sys.version.split()[0]}, {options.repeat} samples per figure, {mode}\n")
    repeat = options.repeat
    measure("import worldflow", "import worldflow", "worldflow", env, repeat)
    measure("import asyncio", "import asyncio", "asyncio", env, repeat)
    measure(
        "import worldflow (after import asyncio)",
        "import asyncio; import worldflow",
        "worldflow",
        env,
        repeat,
    )
    measure(
        "import worldflow.world (the seam every World imports)",
        "import asyncio; import worldflow.world",
        "worldflow.world",
        env,
        repeat,
    )
    measure(
        "import worldflow.worlds.local",
        "import worldflow.worlds.local",
        "worldflow.worlds.local",
        env,
        repeat,
    )
    measure(
        "wf.start's first call (worldflow._api)",
        "import worldflow; import worldflow._api",
        "worldflow._api",
        env,
        repeat,
    )
    heaviest("import worldflow", env, repeat, options.top)


if __name__ == "__main__":
    main()
