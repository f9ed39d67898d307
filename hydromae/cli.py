"""The ``hydromae`` command: one subcommand per module of this package.

Each subcommand's module exposes ``configure(parser)`` and ``run(args) -> int``; it is
imported only when its command runs, so that ``hydromae --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipeline.location import MissingExtra
from pipeline.shard import ShardError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "hydromae.synth",
        "write synthetic Great Britain hydrology in the real file formats",
    ),
    "landmask": (
        "hydromae.landmask",
        "derive the land mask from gridded NetCDF, or print a mask's patch table",
    ),
    "preprocess": (
        "hydromae.preprocess",
        "raw NetCDF grids and catchment series to a Zarr store and WebDataset shards",
    ),
    "inspect": ("hydromae.inspect", "summarise a dataset directory and validate its checksums"),
    "train": ("hydromae.train", "train the multi-modal MAE, on one process or under torchrun"),
    "evaluate": ("hydromae.evaluate", "score a run against baselines on the same masks"),
    "embed": ("hydromae.embed", "write encoder features per (window, catchment)"),
    "viz-mask": (
        "hydromae.viz_mask",
        "draw the seed's mask visualization (red masked, green visible)",
    ),
    "demo": ("hydromae.demo", "run what exists end to end on the built-in synthetic default"),
}


def build_parser(name: str) -> argparse.ArgumentParser:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"hydromae {name}",
        description=(module.__doc__ or help_text).strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.configure(parser)
    parser.set_defaults(_run=module.run)
    return parser


def run_command(name: str, argv: Sequence[str]) -> int:
    """Run one subcommand with its arguments, as ``hydromae NAME ARGV...`` would."""
    if name not in COMMANDS:
        raise SystemExit(f"hydromae: unknown command {name!r}; known: {', '.join(COMMANDS)}")
    args = build_parser(name).parse_args(list(argv))
    run = args._run
    del args._run
    return int(run(args) or 0)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: hydromae COMMAND [options]   (hydromae COMMAND --help for its options)", ""]
    lines += [f"  {n:<{width}}  {h}" for n, (_, h) in COMMANDS.items()]
    return "\n".join(lines)


def describe(err: BaseException) -> str:
    """One line for an error the user can act on: bad input, a file that cannot be read or
    written (named, with the system's reason), a damaged shard, a missing optional extra."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        names = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        text = f"{names}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


# what a user can act on; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, OSError, ShardError, MissingExtra)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    try:
        return run_command(argv[0], argv[1:])
    except USER_ERRORS as err:
        # bad input or a fault outside the program: one clear message, no traceback
        print(f"hydromae {argv[0]}: error: {describe(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hydromae {argv[0]}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
