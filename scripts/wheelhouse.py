#!/usr/bin/env python
"""Download every wheel FlexBERT needs beyond a preinstalled torch, for CPython 3.12 on x86-64
Linux, into wheelhouse/ (``make wheelhouse``; run on a machine with network).

    python scripts/wheelhouse.py [--out wheelhouse] [--dry-run] [--skip FREEZE.txt] [--no-cloud]

Two steps: pip resolves the whole dependency closure of the project (plus the modules
mosaicml-cli imports when Composer loads) for the target platform without installing anything
(``pip install --dry-run --report``), then every resolved distribution except the GPU stack a
CUDA machine already has (torch, torchvision, torchaudio, triton, nvidia-*) is fetched with
``pip download --no-deps --only-binary :all:``.  ``make gpu-report`` installs from the folder
the wheels whose distributions the machine does not already have (scripts/gpu_harness.py),
and builds the 50,368-token tokenizer from the ``gpt2.tiktoken`` copied beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary", ":all:"] + [
    a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
    for a in ("--platform", p)
]
# mosaicml-cli (a Composer dependency) imports these at Composer's import time without declaring
# all of them in the versions pip picks (seen on the H100 image, facts §6).
EXTRA = ["websockets<16", "wcwidth", "platformdirs", "importlib_metadata<9", "pytz"]
# what a CUDA machine ships with its torch build: never downloaded (torchvision is tied to torch)
# pure-Python dependencies published only as source: built into wheels here (any platform)
SDIST_ONLY = ["antlr4-python3-runtime==4.9.3"]  # omegaconf 2.3's parser runtime
# Streaming's remote-storage SDKs (S3, OCI, Azure, GCS, SFTP) and what only they need: imported
# only when data.remote names such a store, so --no-cloud leaves them out (a local-data GPU box)
CLOUD = re.compile(r"^(boto3|botocore|s3transfer|jmespath|oci|circuitbreaker|azure-.*|msal.*|isodate|google-.*|googleapis-.*|"
                   r"proto-plus|pyasn1.*|paramiko|bcrypt|pynacl|pyopenssl|cryptography|cffi|pycparser|python-pkcs11|"
                   r"asn1crypto|crc32c|pyjwt)$")
PREINSTALLED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|pytorch-triton.*)$")


def project_requirements() -> list[str]:
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def build_sdist_only(out: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, *SDIST_ONLY], check=True)


def resolve(requirements: list[str], out: str) -> list[tuple[str, str]]:
    """(name, version) of every distribution in the closure, for the target platform (the
    wheels built from source in ``out`` count as available)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
               "--target", os.path.join(tmp, "t"), "--report", report, "--find-links", out, *TARGET, *requirements]
        subprocess.run(cmd, check=True)
        with open(report) as f:
            items = json.load(f)["install"]
    return sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in items)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "wheelhouse"))
    p.add_argument("--dry-run", action="store_true", help="print the resolved list, download nothing")
    p.add_argument("--skip", default=None, metavar="FILE",
                   help="distributions the target machine already has, one per line (`pip freeze` there): not downloaded")
    p.add_argument("--no-cloud", action="store_true", help="leave out the remote-storage SDKs (data on local disk only)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    build_sdist_only(a.out)
    closure = resolve(project_requirements() + EXTRA, a.out)
    have = set()
    if a.skip:
        with open(a.skip) as f:
            have = {_norm(re.split(r"[=<>~! @]", ln.strip(), maxsplit=1)[0]) for ln in f if ln.strip() and not ln.startswith("#")}
    wanted = [f"{n}=={v}" for n, v in closure if not PREINSTALLED.match(n.lower()) and _norm(n) not in have
              and not (a.no_cloud and CLOUD.match(_norm(n)))]
    skipped = [n for n, _ in closure if PREINSTALLED.match(n.lower())]
    print(f"{len(closure)} distributions resolved; {len(wanted)} to download; preinstalled, skipped: {', '.join(skipped)}")
    if a.dry_run:
        print("\n".join(wanted))
        return 0
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--find-links", a.out, *TARGET, "-d", a.out, *wanted], check=True)
    # gpt2.tiktoken for the 50,368-token tokenizer, which an offline GPU machine cannot fetch
    from flexbert.data.demo_sources import gpt2_tiktoken_path  # the checkout's own library (PYTHONPATH)

    shutil.copyfile(gpt2_tiktoken_path(), os.path.join(a.out, "gpt2.tiktoken"))
    files = [f for f in os.listdir(a.out) if f.endswith(".whl")]
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in files)
    print(f"{a.out}: {len(files)} wheels, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
