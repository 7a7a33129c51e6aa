"""Shared fixtures: the small tokenizer + MDS shards the training tests run on (built once a session)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import helpers from test_train_fixtures

from test_train_fixtures import data_dir  # noqa: E402


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    return data_dir(tmp_path_factory)
