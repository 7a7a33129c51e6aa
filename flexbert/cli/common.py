"""What every command shares: parse, run, and turn a refused input into one line and exit 2.

A command module defines ``parser()`` (an ``argparse.ArgumentParser``) and ``run(args) -> int``;
``command(parser, run)`` makes its ``main(argv=None) -> int``.  ``main``

* applies FlexBERT's environment defaults and the filter for known third-party notices
  (``flexbert.env.quiet_third_party``);
* maps a ``FlexBertError`` (the root of every refused input: flexbert/errors.py) - and the
  classes a command names in ``also`` - to ``error: <first line>`` on stderr and exit code 2;
  a missing file to ``error: file not found: PATH``; Ctrl-C to exit 130;
* refuses a bad flag in one line too (``Parser``: ``error: argument --lr: ...``, exit 2);
* leaves anything else (a bug) to Python's traceback.  ``--debug`` or ``FLEXBERT_DEBUG=1`` shows
  the traceback of a refused input too.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Optional, Sequence

from flexbert.env import dist_env, quiet_third_party
from flexbert.errors import FlexBertError

DEBUG_ENV = "FLEXBERT_DEBUG"


class Parser(argparse.ArgumentParser):
    """argparse's parser whose refusal is one line like every other refused input:
    ``error: argument --density: expected a number in (0, 1], got nan (see flexbert merge --help)``, exit 2
    (argparse would print its usage block above it; ``--help`` shows that)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def make_parser(doc: Optional[str], prog: Optional[str] = None, **kw) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of ``doc`` and whose epilog is the rest."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    return Parser(prog=prog, description=head, epilog=rest or None, formatter_class=argparse.RawDescriptionHelpFormatter,
                  **kw)


def debug_wanted(argv: list[str]) -> tuple[bool, list[str]]:
    """(--debug given or FLEXBERT_DEBUG set, argv without --debug)."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    return debug, [a for a in argv if a != "--debug"]


def fail(message: str, code: int = 2, exc: Optional[BaseException] = None, debug: bool = False) -> int:
    """Print ``error: message`` (prefixed by the rank on multi-process runs) and return ``code``."""
    if debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    env = dist_env()
    prefix = f"[rank {env.rank}] " if env.world_size > 1 else ""
    first = (message.strip().splitlines() or [""])[0]
    print(f"{prefix}error: {first}", file=sys.stderr, flush=True)
    return code


def warn(details: dict) -> None:
    """A result's ``details["warnings"]`` (what an input check left out: judgements, blank records),
    one ``warning: ...`` line each on stderr; the result file keeps them too."""
    for line in details.get("warnings", []):
        print(f"warning: {line}", file=sys.stderr, flush=True)


def refused(e: BaseException, debug: bool, also: Sequence[type] = ()) -> Optional[int]:
    """The exit code for an error a command reports in one line, or None (a bug: re-raise it)."""
    if isinstance(e, FlexBertError) or (also and isinstance(e, tuple(also))):
        return fail(str(e), 2, e, debug)
    if isinstance(e, FileNotFoundError):
        return fail(f"file not found: {e.filename or e}", 2, e, debug)
    return None


def command(parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], int],
            also: Sequence[type] = (), intermixed: bool = False) -> Callable[[Optional[list[str]]], int]:
    """``main(argv=None) -> int`` of a command (see the module docstring); ``intermixed``: options
    may come between positional arguments (``argparse``'s ``parse_intermixed_args``)."""

    def main(argv: Optional[list[str]] = None) -> int:
        debug, argv = debug_wanted(list(sys.argv[1:] if argv is None else argv))
        p = parser()
        args = p.parse_intermixed_args(argv) if intermixed else p.parse_args(argv)
        quiet_third_party()
        try:
            return int(run(args) or 0)
        except KeyboardInterrupt:
            return fail("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - sorted by ``refused``; a bug is re-raised
            code = refused(e, debug, also)
            if code is None:
                raise
            return code

    return main
