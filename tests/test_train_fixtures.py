"""Shared builders for the training tests (imported as ``test_train_fixtures``; holds no tests).

Real inputs, built with the data package's library functions: English text from Python's own
documentation (``pydoc_data.topics``, offline), a small byte-level BPE (``train_bpe``), MDS shards
(``tokenize_to_mds``), and a small model config.  Everything is cached per test session.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
_CACHE: dict = {}


def documents() -> list[str]:
    """~2,000 paragraphs of real English (Python reference documentation)."""
    from pydoc_data.topics import topics

    paras = []
    for key in sorted(topics):
        for p in re.split(r"\n\s*\n", topics[key]):
            p = " ".join(p.split())
            if len(p) > 40:
                paras.append(p)
    return paras


def data_dir(factory, max_seq_len: int = 128) -> str:
    """Tokenizer + train/validation MDS shards, written once per session."""
    key = ("data", max_seq_len)
    if key in _CACHE:
        return _CACHE[key]
    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from flexbert.data.tokenizer import save_tokenizer, train_bpe

    root = factory.mktemp(f"train_data_{max_seq_len}")
    docs = documents()
    tok_dir = str(root / "tokenizer")
    save_tokenizer(train_bpe(docs, vocab_size=1024, min_frequency=2), tok_dir)
    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    out = str(root / "shards")
    tokenize_to_mds([str(corpus)], tok_dir, out, ShardOptions(max_seq_len=max_seq_len, val_fraction=0.05,
                                                             progress=False, size_limit="256kb"))
    _CACHE[key] = out
    return out


def model_overrides(vocab: int = 1024, hidden: int = 64, layers: int = 2, **extra) -> dict:
    m = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3 // 2, num_hidden_layers=layers,
             num_attention_heads=max(1, hidden // 32), local_attention=32, global_attn_every_n_layers=2,
             attention_backend="sdpa", pad_token_id=0, cls_token_id=2, sep_token_id=3, mask_token_id=4)
    m.update(extra)
    return m


def run_config(tmp_path, data: str, **top) -> dict:
    """A complete, small run config as a dict (override anything through ``top``)."""
    cfg = {
        "run_name": "t",
        "run_dir": str(tmp_path / "run"),
        "seed": 7,
        "model": model_overrides(),
        "data": {"local": data, "max_seq_len": 128, "microbatch_size": 2, "global_batch_size": 4,
                 "num_workers": 0, "doc_batch_size": 32, "packer_buffer_size": 64},
        "optimizer": {"name": "stable_adamw", "lr": 2e-3, "weight_decay": 1e-5},
        "scheduler": {"name": "constant_with_warmup", "t_warmup": "2ba"},
        "max_duration": "8ba",
        "eval_interval": "1000ba",
        "eval_subset_num_batches": 4,
        "save_interval": "1000ba",
        "loggers": {"console": False, "jsonl": True},
        "callbacks": {"throughput": True},
    }
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def to_overrides(d: dict, prefix: str = "") -> list[str]:
    """A nested dict as ``key=value`` CLI overrides."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += to_overrides(v, key + ".")
        elif v is None:
            out.append(f"{key}=null")
        elif isinstance(v, bool):
            out.append(f"{key}={'true' if v else 'false'}")
        elif isinstance(v, list):
            out.append(f"{key}=[{','.join(map(str, v))}]")
        else:
            out.append(f"{key}={v}")
    return out


def build_and_fit(cfg_dict: dict, extra_callbacks=None):
    """Validate ``cfg_dict`` like train.py does, build the trainer, fit, close; returns the TrainRun."""
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig

    clean_stale_shared_memory()
    cfg = from_dict(RunConfig, cfg_dict, "")
    run = build_trainer(cfg, extra_callbacks=extra_callbacks)
    try:
        run.fit()
    finally:
        run.close()
    return run


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_py(args: list[str], cwd: str | None = None, env: dict | None = None, timeout: int = 240, launcher=None):
    """Run ``python train.py ARGS`` (or ``composer -n N train.py``, through ``launch_ranks``) and
    return the CompletedProcess; nothing it started outlives the call."""
    e = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    e.update(env or {})
    if launcher:
        return launch_ranks(args, launcher, env=e, cwd=cwd or ROOT, timeout=timeout)
    return run_group([PY, os.path.join(ROOT, "train.py"), *args], env=e, cwd=cwd or ROOT, timeout=timeout)


# ---------------------------------------------------------------- processes that start ranks
# Every test that starts ranks ends all of them, on success, failure or timeout: each launch runs
# in a session of its own, so the launcher and its ranks are one process group, and the group is
# ended (SIGTERM, then SIGKILL) when the launch returns or raises.  A rendezvous lost to a busy
# machine (the port picked taken before rank 0 binds it, a rank starting past the timeout) is
# retried with a fresh free port and a longer dist_timeout; giving up says so.

COMPOSER = os.path.join(os.path.dirname(PY), "composer")
# what the ranks print when they never met: the store's port taken, the store timed out waiting for
# a rank, gloo unable to connect its pairs
RENDEZVOUS_ERRORS = ("DistNetworkError", "DistStoreError", "EADDRINUSE", "connectFullMesh")
DIST_TIMEOUTS = (300, 600, 900)  # seconds the ranks may take to meet, per try (dist_timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessGroup:
    """``cmd`` in a session of its own: it and everything it starts (a launcher's ranks) form one
    process group, which ``end()`` ends whole.  The leader is not reaped before the group is
    empty, so its pid -- the group's id -- cannot be reused by another process meanwhile and every
    signal reaches only this group.  Output goes to temporary files (no pipe to fill)."""

    def __init__(self, cmd: list[str], env: dict | None = None, cwd: str | None = None):
        import tempfile

        self.cmd = cmd
        self._files = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
        self.proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdout=self._files[0], stderr=self._files[1],
                                     text=True, start_new_session=True)
        self.pid = self.proc.pid

    def exited(self) -> bool:
        """Has the leader exited (without reaping it)?"""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped already
            return True

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the leader to exit; True if it did."""
        end = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() > end:
                return False
            time.sleep(0.1)
        return True

    def members(self) -> list[int]:
        """Live processes of the group other than the leader (from /proc: field 5 of stat)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(pid) != self.pid and int(fields[2]) == self.pid and fields[0] != "Z":
                found.append(int(pid))
        return found

    def end(self, grace: float = 10.0) -> int:
        """SIGTERM to the group, SIGKILL to what is left after ``grace`` seconds; reap the leader;
        its return code."""
        if self.proc.returncode is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
                if self.exited() and not self.members():
                    break
                try:
                    os.killpg(self.pid, sig)  # the unreaped leader keeps the group id ours
                except ProcessLookupError:
                    break
                end = time.monotonic() + wait
                while time.monotonic() < end and not (self.exited() and not self.members()):
                    time.sleep(0.1)
            self.proc.wait()
        return self.proc.returncode

    def output(self) -> tuple[str, str]:
        out = []
        for f in self._files:
            f.seek(0)
            out.append(f.read())
        return out[0], out[1]

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.end()
        for f in self._files:
            f.close()


def run_group(cmd: list[str], env: dict | None = None, cwd: str | None = None,
              timeout: float = 240) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose children end with it: on return, failure or timeout every process
    ``cmd`` started is ended.  Past ``timeout`` seconds: AssertionError naming the command."""
    with ProcessGroup(cmd, env, cwd) as group:
        finished = group.wait(timeout)
        rc = group.end()
        out, err = group.output()
    if not finished:
        raise AssertionError(f"{' '.join(os.path.basename(c) for c in cmd[:3])} ... ran past {timeout:.0f} s; every "
                             f"process it started was ended.  stderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, rc, out, err)


def lost_rendezvous(stderr: str) -> bool:
    return any(e in (stderr or "") for e in RENDEZVOUS_ERRORS)


def private_shm_works() -> bool:
    """Can a command run in a mount namespace of its own with a fresh /dev/shm (``unshare -rm``)?"""
    if "private_shm" not in _CACHE:
        import shutil

        ok = shutil.which("unshare") is not None and subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /dev/shm"], capture_output=True).returncode == 0
        _CACHE["private_shm"] = ok
    return _CACHE["private_shm"]


def as_node(cmd: list[str], env: dict, tmpdir: str) -> tuple[list[str], dict]:
    """``cmd`` as a machine of its own would run it: a private /dev/shm (``unshare -rm``, when the
    kernel allows it) and its own TMPDIR.  Streaming coordinates a node's ranks through shared
    memory names and temp-dir file locks that it picks from what it finds free, so two launchers
    sharing them (parallel test workers; two "nodes" of a multinode test) can pick the same names.
    ``unshare`` execs the command in place: the returned command's pid is the launcher's."""
    env = dict(env, TMPDIR=tmpdir)
    if not private_shm_works():
        return cmd, env
    return ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs tmpfs /dev/shm && exec "$@"', "node", *cmd], env


def launch_ranks(args: list[str], n: int = 2, env: dict | None = None, cwd: str | None = None, timeout: float = 300,
                 dist_timeouts: tuple[int, ...] = DIST_TIMEOUTS) -> subprocess.CompletedProcess:
    """``composer -n N train.py ARGS`` on a port picked here: a lost rendezvous is tried again with
    a fresh port and the next, longer ``dist_timeout``; any other outcome is returned.  Each try may
    run ``timeout`` seconds beyond its ``dist_timeout`` (the ranks may wait that long to meet)."""
    import tempfile

    tried = []
    for dist_timeout in dist_timeouts:
        port = free_port()
        cmd = [COMPOSER, "-n", str(n), "--master_port", str(port), os.path.join(ROOT, "train.py"), *args,
               f"dist_timeout={dist_timeout}"]
        with tempfile.TemporaryDirectory(prefix="node-tmp-") as tmpdir:
            cmd, e = as_node(cmd, env or dict(os.environ), tmpdir)  # apart from parallel test workers' launches
            proc = run_group(cmd, env=e, cwd=cwd or ROOT, timeout=timeout + dist_timeout)
        if proc.returncode == 0 or not lost_rendezvous(proc.stderr):
            return proc
        tried.append(f"port {port}, dist_timeout {dist_timeout} s")
        retried(tried[-1])
    raise AssertionError(gave_up(n, tried, proc.stderr))


def retried(what: str) -> None:
    """A lost rendezvous, said in pytest's warnings summary (a passing test shows its retries too)."""
    import warnings

    warnings.warn(f"rendezvous lost ({what}): retrying with a fresh port and a longer timeout", stacklevel=2)


def gave_up(n: int, tried: list[str], stderr: str) -> str:
    return (f"the {n} ranks never met: rendezvous lost {len(tried)} times ({'; '.join(tried)}), each retried with a "
            f"fresh port and a longer timeout; the machine is too busy or its ports are taken.  Last stderr:\n"
            f"{stderr[-3000:]}")
