"""`python -m medusa_core <command>`: generate, distill, train-heads, calibrate, bench, evaluate."""

from __future__ import annotations

import argparse
import sys

from medusa_core.cli import COMMANDS
from medusa_core.modeling.default_model import DefaultModelError
from medusa_core.modeling.models import ModelLoadError

# What a user can fix (bad input, a missing model): one line. Anything else is a fault: traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ModelLoadError, DefaultModelError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medusa_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
