"""Shared fixtures: the small tokenizer + MDS shards the training tests run on (built once a session)."""

import os
import resource
import sys

import pytest

# Every StreamingDataset built in this process keeps its shared-memory blocks (and their file
# descriptors) until exit: streaming registers each block's cleanup with atexit, which holds it.
# Hundreds of in-process loaders over a session pass a 1024 soft limit ("Too many open files" in
# CI, wave four); the hard limit is the machine's real bound.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard == resource.RLIM_INFINITY or _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard if _hard != resource.RLIM_INFINITY else max(_soft, 65536), _hard))

# FlexBERT's environment defaults, as its commands set them, before any test imports torch's
# modules: without TORCH_WARM_POOL=0 every process importing Composer (each pytest worker, every
# train.py and rank a test starts) also starts Inductor's compile-worker pool, ~12 s of CPU each.
from flexbert.env import THIRD_PARTY_DEFAULTS  # noqa: E402

for _key, _value in THIRD_PARTY_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

sys.path.insert(0, os.path.dirname(__file__))  # tests import helpers from test_train_fixtures

from test_train_fixtures import build_and_fit, data_dir, run_config  # noqa: E402


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    return data_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data):
    """A finished 4-batch run whose checkpoints live outside its run folder (a custom save_folder).
    Shared: tests that change it work on a copy."""
    import yaml

    tmp = tmp_path_factory.mktemp("runfolder")
    cfg = run_config(tmp, data, max_duration="4ba", save_interval="2ba", eval_interval="2ba", eval_subset_num_batches=2,
                     save_folder=str(tmp / "elsewhere" / "ckpts"))
    build_and_fit(cfg)
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return cfg, str(config)


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` (the multi-minute, multi-process ones) run first, in file order.

    ``make test`` runs two pytest-xdist workers that take whole files (``--dist loadfile``) in this
    order: a worker starts a long file while the other works through the many short ones, so
    neither idles at the end waiting on the other's last long file."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept within each


# FLEXBERT_TEST_CPU=FILE: one JSON line per test (setup, call and teardown together) with its wall
# seconds and the CPU seconds of the pytest process and of the processes it started and waited for
# (ranks count through their launcher).  What docs/internals.md's table of the suite's CPU is made
# from: on a 2-core machine the suite's wall time is about its CPU over two.
_CPU_LOG = os.environ.get("FLEXBERT_TEST_CPU")


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


if _CPU_LOG:
    import json
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        t0, (self0, kids0) = time.time(), _cpu()
        yield
        self1, kids1 = _cpu()
        line = json.dumps({"test": item.nodeid, "wall": round(time.time() - t0, 2), "cpu_self": round(self1 - self0, 2),
                           "cpu_children": round(kids1 - kids0, 2),
                           "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")})
        with open(_CPU_LOG, "a") as f:
            f.write(line + "\n")
