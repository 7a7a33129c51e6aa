#!/usr/bin/env python
"""The GPU machine's side of ``make gpu-report``: what it runs (versions, device, driver) and the
wheels it still needs (``python scripts/gpu_env.py install WHEELHOUSE``)."""

from __future__ import annotations

import os
import sys


def env_info() -> dict:
    import datetime
    import platform
    import subprocess
    from importlib import metadata

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    env["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    for dist in ("transformers", "mosaicml", "mosaicml-streaming"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = "absent"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        env["driver"] = "none"
    return env


def install_missing(wheelhouse: str) -> int:
    """pip-install (no index, no deps) the wheels whose distribution is not installed yet: the
    machine's own torch stack, numpy and transformers stay as they are."""
    import subprocess
    from importlib import metadata

    wheels = sorted(f for f in os.listdir(wheelhouse) if f.endswith(".whl"))
    missing = []
    for w in wheels:
        name = w.split("-")[0].replace("_", "-").lower()
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(os.path.join(wheelhouse, w))
    print(f"{len(wheels)} wheels in {wheelhouse}; {len(missing)} not installed yet")
    if not missing:
        return 0
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", *missing]).returncode


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "install":
    sys.exit(install_missing(sys.argv[2]))
