"""``train.py``'s command line: ``train.py CONFIG.yaml [key=value ...] [--debug]``.

Works as ``python train.py ...`` and under the Composer launcher (``composer [-n N] train.py
...``).  A bad invocation (unknown key, wrong type, unknown module name, missing data, unreadable
checkpoint) prints ONE line, ``error: ...``, and exits non-zero; ``--debug`` or ``FLEXBERT_DEBUG=1``
shows the traceback instead.  Exit codes: 2 bad config/usage, 3 diverged, 143 (130 for Ctrl-C)
stopped by a signal after saving a checkpoint (``callbacks.graceful_stop``; rerun to resume), 1
anything else.
"""

from __future__ import annotations

import os
import sys

from flexbert.train.quiet import quiet_known_warnings

USAGE = "usage: train.py CONFIG.yaml [key=value ...] [--debug] [--print-config]"


def _quiet_third_party() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "offline")
    quiet_known_warnings()


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("FLEXBERT_DEBUG", "") not in ("", "0")
    if "--debug" in argv:
        debug = True
        argv = [a for a in argv if a != "--debug"]
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

    _quiet_third_party()
    try:
        from flexbert.train.config import as_plain_dict, load_run_config

        cfg = load_run_config(config_path, overrides)
        if print_config:
            import yaml

            print(yaml.safe_dump(as_plain_dict(cfg), sort_keys=False))
            return 0
    except Exception as e:  # noqa: BLE001 - classified below
        return _handle(e, debug)
    return run(cfg, debug)


def run(cfg, debug: bool = False) -> int:
    from flexbert.train.builders import build_trainer
    from flexbert.train.callbacks import TrainingDiverged
    from flexbert.train.preemption import EXIT_CODE, Preempted

    run_obj = None
    try:
        run_obj = build_trainer(cfg)
        if not run_obj.fit() and _rank() == 0:
            print(f"[flexbert] {cfg.run_name} is already complete ({run_obj.plan.path}); nothing to do", flush=True)
    except TrainingDiverged as e:
        _close(run_obj)
        return _fail(str(e), 3, debug, e)
    except Preempted as e:
        _close(run_obj)
        if _rank() == 0:
            print(f"[flexbert] {cfg.run_name}: {e}", file=sys.stderr, flush=True)
        return 130 if e.signame == "SIGINT" else EXIT_CODE
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
    from flexbert.config import ConfigError
    from flexbert.data.fingerprint import TokenizerMismatchError
    from flexbert.data.outputs import OutputError
    from flexbert.registry import RegistryError
    from flexbert.train.loading import SetupError
    from flexbert.train.run_folder import RunFolderError
    from flexbert.train.run_lock import RunLocked

    if isinstance(e, (ConfigError, RegistryError, SetupError, RunFolderError, RunLocked, TokenizerMismatchError,
                      OutputError)):
        return _fail(str(e), 2, debug, e)
    if isinstance(e, FileNotFoundError):
        return _fail(f"file not found: {e.filename or e}", 2, debug, e)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    hint = "" if debug else " (rerun with --debug or FLEXBERT_DEBUG=1 for the traceback)"
    return _fail(f"{type(e).__name__}: {msg}{hint}", 1, debug, e)


def _fail(message: str, code: int, debug: bool, exc: BaseException | None = None) -> int:
    if debug and exc is not None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    prefix = f"[rank {_rank()}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    print(f"{prefix}error: {message}", file=sys.stderr, flush=True)
    return code
