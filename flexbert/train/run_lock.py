"""One writer per run folder: ``{run_dir}/.lock`` names the process training in it.

train.py takes the lock (global rank 0 only) before anything in the folder changes and gives it
back when it ends; a second writer refuses in one line naming the holder.  A lock left by a
process that no longer exists (killed, machine rebooted) is taken over with a message.  A lock
from another host cannot be checked from here: the refusal says how to clear it by hand.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Optional

from flexbert.errors import FlexBertError

LOCK = ".lock"


class RunLocked(FlexBertError, RuntimeError):
    """Another live process writes to this run folder; the message is one line."""


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    recorded, now = holder.get("start"), _start_time(pid)
    return recorded is None or now is None or recorded == now


def read_lock(run_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(run_dir, LOCK)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def holder_line(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (since {started}: {holder.get('what', '?')})"


def held_by_other(run_dir: str) -> Optional[dict]:
    """The live holder of the folder's lock other than this process, else None."""
    holder = read_lock(run_dir)
    if holder is None:
        return None
    if holder.get("host") == socket.gethostname():
        return holder if int(holder.get("pid", -1)) != os.getpid() and _alive(holder) else None
    return holder  # another machine: assume alive


def acquire(run_dir: str, what: str) -> None:
    """Take the folder's lock or raise RunLocked; a stale lock of a dead process is taken over."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()), "time": time.time(),
          "what": what}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(run_dir)
            other = held_by_other(run_dir)
            if other is not None:
                hint = "" if other.get("host") == socket.gethostname() else \
                    f"; if that process is gone, delete {path}"
                raise RunLocked(f"{run_dir} is in use by {holder_line(other)}: one writer per run folder{hint}")
            if holder is not None and int(holder.get("pid", -1)) != os.getpid():
                print(f"[flexbert] taking over the lock of {run_dir} from {holder_line(holder)}, which is no longer "
                      "running", file=sys.stderr, flush=True)
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return
    raise RunLocked(f"{run_dir}: could not take {path} (another process keeps creating it)")


def release(run_dir: str) -> None:
    """Give the lock back if this process holds it."""
    holder = read_lock(run_dir)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        try:
            os.remove(os.path.join(run_dir, LOCK))
        except FileNotFoundError:
            pass
