"""Run a lite model from the command line, with numpy alone:

python -m ferry.lite model.flite --input x=x.npy [--output out.npz] [--repeat 20]
python -m ferry.lite --ops
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import LiteError, load, supported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a .flite file")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="one per input")
    parser.add_argument("--output", help="write the outputs to this .npz (default: print a summary)")
    parser.add_argument("--repeat", type=int, default=1, help="run this many times and print the mean latency")
    parser.add_argument("--ops", action="store_true", help="list the ops this runtime supports")
    args = parser.parse_args(argv)
    if args.ops:
        print("\n".join(supported()))
        return 0
    if not args.model:
        parser.error("give a model (or --ops)")
    try:
        model = load(args.model)
        feeds = {}
        for item in args.input:
            name, sep, path = item.partition("=")
            if not sep:
                parser.error(f"--input takes NAME=FILE.npy, got {item!r}")
            feeds[name] = np.load(path)
        started = time.perf_counter()
        for _ in range(max(1, args.repeat)):
            outputs = model.run(feeds)
        mean_ms = (time.perf_counter() - started) * 1000 / max(1, args.repeat)
    except (LiteError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output:
        np.savez(args.output, **outputs)
    for name, value in outputs.items():
        print(f"{name}: shape {list(np.shape(value))} dtype {getattr(value, 'dtype', type(value).__name__)}")
    if args.repeat > 1:
        print(f"mean latency over {args.repeat} runs: {mean_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
