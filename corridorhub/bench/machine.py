"""What a benchmark ran on: cores, CPU, memory, Python, the libraries on the hot path, the broker."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from corridorhub.broker import find_mosquitto

LIBRARIES = ("paho-mqtt", "pyarrow", "deltalake", "duckdb", "orjson", "numpy")


def describe_machine() -> dict[str, str]:
    """A flat description, printed with the figures and kept in the JSON line."""
    out = {
        "cpus": str(os.cpu_count() or "?"),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mosquitto": _mosquitto_version(),
    }
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def load_average() -> float:
    """The 1-minute load average: above the core count, other work competed with the benchmark."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on Linux/macOS
        return float("nan")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return "unknown"
    return f"{psutil.virtual_memory().total / 2**30:.1f} GiB"


def _mosquitto_version() -> str:
    executable = find_mosquitto()
    if executable is None:
        return "not installed"
    try:
        # `mosquitto -h` prints its version on the first line (and exits non-zero).
        done = subprocess.run([executable, "-h"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"
