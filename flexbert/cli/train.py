"""``flexbert train`` (and ``train.py``): ``train CONFIG.yaml [key=value ...] [--debug]``.

Works as ``python train.py ...`` and under the Composer launcher (``composer [-n N] train.py
...``).  A bad invocation (unknown key, wrong type, unknown module name, missing data, unreadable
checkpoint) prints ONE line, ``error: ...``, and exits non-zero; ``--debug`` or ``FLEXBERT_DEBUG=1``
shows the traceback instead.  Exit codes: 2 bad config/usage, 3 diverged, 143 (130 for Ctrl-C)
stopped by a signal after saving a checkpoint (``callbacks.graceful_stop``; rerun to resume), 1
anything else.
"""

from __future__ import annotations

import sys

import yaml

from flexbert.cli.common import debug_wanted, fail, refused
from flexbert.env import dist_env, quiet_third_party
from flexbert.train.config import as_plain_dict, load_run_config, with_known_data

USAGE = "usage: train.py CONFIG.yaml [key=value ...] [--debug] [--print-config]"


def main(argv: list[str] | None = None) -> int:
    debug, argv = debug_wanted(list(sys.argv[1:] if argv is None else argv))
    print_config = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        print(__doc__.split("\n\n", 1)[1].strip())  # the whole paragraph, never a cut line
        return 0
    unknown_flags = [a for a in argv if a.startswith("--")]
    if unknown_flags:
        return _fail(f"unknown option {unknown_flags[0]}; {USAGE}", 2, debug)
    if not argv or "=" in argv[0]:
        return _fail(f"no config file given; {USAGE}", 2, debug)
    config_path, overrides = argv[0], argv[1:]

    quiet_third_party()
    try:
        cfg = load_run_config(config_path, overrides)
        if print_config:
            print(yaml.safe_dump(as_plain_dict(with_known_data(cfg)), sort_keys=False))
            return 0
        cfg.data.require_local()  # before Composer's import: a missing folder answers at once
    except Exception as e:  # noqa: BLE001 - classified below
        return _handle(e, debug)
    return run(cfg, debug)


def run(cfg, debug: bool = False) -> int:
    # deferred (one of the allowed function-local imports: tests/test_code_shape.py): Composer takes
    # seconds to import, and a refused config or --help answers before it
    from flexbert.train import builders, callbacks, preemption

    run_obj = None
    try:
        run_obj = builders.build_trainer(cfg)
        if not run_obj.fit() and dist_env().is_main:
            print(f"[flexbert] {cfg.run_name} is already complete ({run_obj.plan.path}); nothing to do", flush=True)
    except callbacks.TrainingDiverged as e:
        _close(run_obj)
        return _fail(str(e), 3, debug, e)
    except preemption.Preempted as e:
        _close(run_obj)
        if dist_env().is_main:
            print(f"[flexbert] {cfg.run_name}: {e}", file=sys.stderr, flush=True)
        return 130 if e.signame == "SIGINT" else preemption.EXIT_CODE
    except KeyboardInterrupt:
        _close(run_obj)
        return _fail("interrupted", 130, debug)
    except Exception as e:  # noqa: BLE001
        _close(run_obj)
        return _handle(e, debug)
    _close(run_obj)
    return 0


def _close(run_obj) -> None:
    if run_obj is not None:
        try:
            run_obj.close()
        except Exception:  # noqa: BLE001 - already failing or done; never mask the real error
            pass


def _handle(e: BaseException, debug: bool) -> int:
    """A refused input: one line, exit 2; anything else: one line with its type, exit 1."""
    code = refused(e, debug)
    if code is not None:
        return code
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    hint = "" if debug else " (rerun with --debug or FLEXBERT_DEBUG=1 for the traceback)"
    return _fail(f"{type(e).__name__}: {msg}{hint}", 1, debug, e)


def _fail(message: str, code: int, debug: bool, exc: BaseException | None = None) -> int:
    return fail(message, code, exc, debug)
