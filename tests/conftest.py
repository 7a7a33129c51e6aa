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
