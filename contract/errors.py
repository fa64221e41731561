"""User mistakes end in one line that names the file, the place and the fix, and exit status 1. A traceback is
for our bugs (or `--debug`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """Bad input, a missing file, a wrong setting: something the user fixes, not a bug."""


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a stage's `main`, turning a UserError into `error: ...` on stderr and exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(args)
    except UserError as err:
        if "--debug" in args:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if "--debug" in args:
            raise
        print("interrupted (what a stage writes is complete or absent; resumable stages resume)", file=sys.stderr)
        return 130
