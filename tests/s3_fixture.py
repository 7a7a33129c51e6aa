"""A real S3 API on loopback for the object-storage tests (moto's server mode; imported by test modules).

``moto_server()`` runs one moto server per test session on 127.0.0.1 with a port the OS picks, and
closes its socket at the end.  The ``s3`` fixture points this process (and every subprocess it
starts: DataLoader workers, ``composer -n 2`` ranks) at it through the standard ``S3_ENDPOINT_URL``
plus fake credentials, creates a fresh bucket, and yields ``S3Bucket``.  Nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass

import pytest

_COUNTER = itertools.count()
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "flexbert-test",
    "AWS_SECRET_ACCESS_KEY": "flexbert-test",
    "AWS_SESSION_TOKEN": "flexbert-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata endpoint for credentials
}


class _RequestLog(logging.Handler):
    """The server's access log (werkzeug logs one line per request): which objects were fetched."""

    GET = re.compile(r'"GET /([^/ ?]+)/([^ ?]+)[^"]* HTTP')

    def __init__(self):
        super().__init__(logging.INFO)
        self.gets: Counter = Counter()  # (bucket, key) -> GET requests

    def emit(self, record: logging.LogRecord) -> None:
        m = self.GET.search(record.getMessage())
        if m:
            self.gets[(m.group(1), m.group(2))] += 1


class MotoServer:
    """moto's ThreadedMotoServer on 127.0.0.1:<free port>; ``stop()`` also releases the port."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.log = _RequestLog()
        wz = logging.getLogger("werkzeug")
        wz.addHandler(self.log)
        wz.setLevel(logging.INFO)
        wz.propagate = False  # keep the access log out of pytest's captured output
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{self.port}"

    def stop(self) -> None:
        logging.getLogger("werkzeug").removeHandler(self.log)
        self._server.stop()
        inner = getattr(self._server, "_server", None)
        if inner is not None:
            inner.server_close()  # shutdown() only ends the loop; this closes the listening socket


@dataclass
class S3Bucket:
    name: str
    endpoint: str
    server: "MotoServer"

    def gets(self, prefix: str = "") -> Counter:
        """GET requests served so far per key under ``prefix`` (this process's server)."""
        return Counter({k: n for (b, k), n in self.server.log.gets.items() if b == self.name and k.startswith(prefix)})

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *[p.strip("/") for p in parts if p]])

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto_server():
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch):
    """A fresh, empty bucket on the loopback server, with S3_ENDPOINT_URL and credentials set."""
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_server.endpoint)
    for k, v in FAKE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)  # ignore the user's own profiles
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    bucket = S3Bucket(f"flexbert-{os.getpid()}-{next(_COUNTER)}", moto_server.endpoint, moto_server)
    bucket.client().create_bucket(Bucket=bucket.name)
    yield bucket
