"""The environment report: what this machine can train with, and the fix for what is missing.

Each check is {"name", "status": "ok" | "warn" | "error", "value", "fix"}. torch is imported in
a subprocess only (the server that calls this must never import torch itself); library versions
come from package metadata, without importing the libraries.

    python -m trainers.tools.doctor [--json]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

# (distribution name, needed for every run?, install command)
PACKAGES = [
    ("transformers", True, "pip install transformers"),
    ("peft", True, "pip install peft"),
    ("trl", True, "pip install trl"),
    ("datasets", True, "pip install datasets"),
    ("accelerate", True, "pip install accelerate"),
    ("unsloth", False, "pip install unsloth  (the unsloth provider; Linux or WSL 2 with an NVIDIA GPU)"),
    ("bitsandbytes", False, "pip install bitsandbytes  (4-bit QLoRA and 8-bit optimizers, CUDA)"),
    ("flash-attn", False, "pip install flash-attn --no-build-isolation  (optional, CUDA, Ampere+)"),
    ("xformers", False, "pip install xformers  (optional: memory-efficient attention)"),
    ("triton", False, "pip install triton  (comes with CUDA builds of torch; needed by unsloth)"),
]

TORCH_INSTALL = ("pip install torch --index-url https://download.pytorch.org/whl/cu124  "
                 "(pick the CUDA version your driver supports; see pytorch.org)")

# Run in a fresh interpreter: torch's import cost and CUDA state stay out of the caller.
_TORCH_PROBE = r"""
import json
import os
getattr(os, "nice", lambda increment: 0)(10)  # as trainers.runs.process.HELPER_NICENESS
try:
    import torch
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
info = {"version": torch.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "gpus": []}
if info["cuda_available"]:
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                             "compute_capability": f"{p.major}.{p.minor}",
                             "bf16": p.major >= 8})
mps = getattr(torch.backends, "mps", None)
info["mps_available"] = bool(mps and mps.is_available())
print(json.dumps(info))
"""


def _check(name: str, status: str, value: str, fix: str = "") -> dict:
    return {"name": name, "status": status, "value": value, "fix": fix}


# --- the operating system ----------------------------------------------------------------

def detect_platform() -> str:
    """One of: WSL 2, WSL 1, Docker, Linux, macOS, Windows (native), or the OS name."""
    system = platform.system()
    if system == "Darwin":
        return "macOS"
    if system == "Windows":
        return "Windows (native)"
    if system != "Linux":
        return system
    release = platform.release().lower()
    if "microsoft" in release or os.environ.get("WSL_DISTRO_NAME"):
        return "WSL 2" if "wsl2" in release or "microsoft-standard" in release else "WSL 1"
    if _in_container():
        return "Docker"
    return "Linux"


def _in_container() -> bool:
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        cgroup = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "containerd", "kubepods", "libpod"))


def check_os() -> dict:
    where = detect_platform()
    value = f"{where} ({platform.platform()})"
    if where == "Windows (native)":
        return _check("operating system", "warn", value,
                      "Unsloth, bitsandbytes 4-bit and Triton kernels work best under WSL 2: "
                      "install WSL 2 with Ubuntu and the NVIDIA driver for WSL, then run there.")
    if where == "macOS":
        return _check("operating system", "warn", value,
                      "No CUDA on macOS: the unsloth provider, 4-bit QLoRA and 8-bit optimizers "
                      "need an NVIDIA GPU on Linux/WSL 2. The huggingface provider runs on CPU/MPS.")
    if where == "WSL 1":
        return _check("operating system", "warn", value,
                      "WSL 1 has no GPU access: convert with `wsl --set-version <distro> 2`.")
    return _check("operating system", "ok", value)


def check_python() -> dict:
    v = sys.version_info
    value = f"{platform.python_version()} ({sys.executable})"
    if v < (3, 10):
        return _check("python", "error", value, "Use Python 3.10 to 3.13.")
    if v >= (3, 14):
        return _check("python", "warn", value,
                      "Unsloth and some CUDA wheels lag new Python releases: 3.10-3.13 is safest.")
    return _check("python", "ok", value)


# --- torch and the GPUs ------------------------------------------------------------------

def probe_torch(timeout_s: float = 120) -> dict:
    """torch facts from a subprocess: {"version", "cuda_build", "cuda_available", "gpus"} or
    {"error": ...}."""
    try:
        from trainers.runs.process import child_env

        out = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True,
                             text=True, timeout=timeout_s, env=child_env())
    except subprocess.TimeoutExpired:
        return {"error": f"importing torch took longer than {timeout_s:.0f} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def check_torch(info: dict) -> list[dict]:
    if "error" in info:
        return [_check("torch", "error", f"cannot import: {info['error']}", TORCH_INSTALL)]
    build = f"CUDA {info['cuda_build']} build" if info.get("cuda_build") else "CPU-only build"
    checks = [_check("torch", "ok", f"{info['version']} ({build})")]
    if info.get("cuda_available"):
        checks.append(_check("cuda", "ok", f"{len(info['gpus'])} GPU(s) visible"))
    elif info.get("cuda_build"):
        checks.append(_check(
            "cuda", "warn", "CUDA build, but no GPU is visible: training runs on the CPU (slowly)",
            "Check the NVIDIA driver with `nvidia-smi`; in Docker pass `--gpus all`; make sure "
            "CUDA_VISIBLE_DEVICES is not empty."))
    else:
        fix = ("Apple GPU (MPS) found; the huggingface provider can use it."
               if info.get("mps_available") else "")
        checks.append(_check("cuda", "warn", "CPU-only torch: no CUDA",
                             fix or f"For an NVIDIA GPU install a CUDA build: {TORCH_INSTALL}"))
    for i, gpu in enumerate(info.get("gpus", [])):
        value = (f"{gpu['name']}, {gpu['memory_gib']} GiB, compute capability "
                 f"{gpu['compute_capability']}, bf16 {'yes' if gpu['bf16'] else 'no'}")
        major = int(gpu["compute_capability"].split(".")[0])
        if major < 7:
            checks.append(_check(f"gpu {i}", "warn", value,
                                 "Unsloth and bitsandbytes need compute capability 7.0 or newer; "
                                 "use the huggingface provider without 4-bit here."))
        else:
            fix = "" if gpu["bf16"] else "No bf16 on this GPU: set fp16 true instead of bf16."
            checks.append(_check(f"gpu {i}", "ok", value, fix))
    return checks


# --- libraries ---------------------------------------------------------------------------

def installed_version(dist: str) -> str | None:
    for name in (dist, dist.replace("-", "_")):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def unsloth_conflicts() -> dict[str, str]:
    """Installed packages that break the installed unsloth's own requirements: name -> spec."""
    from packaging.requirements import Requirement

    try:
        reqs = requires("unsloth") or []
    except PackageNotFoundError:
        return {}
    broken = {}
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        have = installed_version(req.name)
        if have is not None and req.specifier and not req.specifier.contains(have, prereleases=True):
            broken[req.name.lower()] = str(req.specifier)
    return broken


# Optional packages that do nothing without a CUDA GPU: not suggested on a machine without one.
GPU_ONLY = ("flash-attn", "xformers")


def check_packages(gpu: bool = True) -> list[dict]:
    conflicts = unsloth_conflicts()
    checks = []
    for dist, required, install in PACKAGES:
        have = installed_version(dist)
        if have is None and not gpu and dist in GPU_ONLY:
            checks.append(_check(dist, "ok", "not installed: only useful with a CUDA GPU, and "
                                             "this machine has none"))
        elif have is None:
            checks.append(_check(dist, "error" if required else "warn", "missing", install))
        elif dist.lower() in conflicts:
            spec = conflicts[dist.lower()]
            checks.append(_check(dist, "error", f"{have} (unsloth needs {dist}{spec})",
                                 f"pip install '{dist}{spec}'"))
        else:
            checks.append(_check(dist, "ok", have))
    return checks


# --- the machine ---------------------------------------------------------------------------

def check_disk(data_dir: Path) -> dict:
    path = data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    free_gib = shutil.disk_usage(path).free / 2**30
    value = f"{free_gib:.1f} GiB free at {data_dir}"
    if free_gib < 5:
        return _check("disk", "warn", value,
                      "Adapters and checkpoints need space: free some, or set MODELFORGE_HOME "
                      "to a larger disk.")
    return _check("disk", "ok", value)


def check_memory() -> dict:
    import psutil

    total = psutil.virtual_memory().total / 2**30
    return _check("memory", "ok" if total >= 8 else "warn", f"{total:.1f} GiB RAM",
                  "" if total >= 8 else "Under 8 GiB RAM: loading even small models may fail.")


HUB_TIMEOUT_S = 3.0


def hub_reachable(endpoint: str, timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the hub's host opens within `timeout_s`, else why not."""
    import socket
    from urllib.parse import urlparse

    from concurrent.futures import ThreadPoolExecutor, TimeoutError as Late

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)

    def connect() -> None:  # the name lookup too: create_connection's timeout does not cover it
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            pass

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=timeout_s + 0.5)
        return None
    except Late:
        return f"no answer within {timeout_s:.0f} s"
    except OSError as exc:
        return str(exc) or type(exc).__name__
    finally:
        pool.shutdown(wait=False)


def check_hub() -> dict:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        return _check("hugging face hub", "warn", "offline (HF_HUB_OFFLINE=1)",
                      "Only local model directories and models already in the Hugging Face "
                      "cache load; unset HF_HUB_OFFLINE to download hub models.")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    why = hub_reachable(endpoint)
    if why is not None:
        return _check("hugging face hub", "warn",
                      f"online mode, but {endpoint} cannot be reached ({why[:120]})",
                      "Without a network only local model directories and models already in "
                      "the Hugging Face cache load: use those (or `modelforge run --demo`), and "
                      "set HF_HUB_OFFLINE=1 so nothing waits for the network.")
    return _check("hugging face hub", "ok", f"online: {endpoint} reachable (downloads allowed)")


def run_checks(data_dir: Path | None = None) -> list[dict]:
    if data_dir is None:
        from trainers.runs.process import default_data_dir

        data_dir = default_data_dir()
    torch_info = probe_torch()
    return [check_os(), check_python(), *check_torch(torch_info),
            *check_packages(gpu=bool(torch_info.get("cuda_available"))),
            check_memory(), check_disk(Path(data_dir)), check_hub()]


CACHE_S = 300  # how long a server keeps the report: its torch probe takes seconds
_cache: dict[str, tuple[float, list[dict]]] = {}
_cache_lock = threading.Lock()


def cached_checks(data_dir: Path, refresh: bool = False) -> tuple[float, list[dict]]:
    """(checked_at, checks): the report the server's API and dashboard share, run again when
    older than CACHE_S or when `refresh`."""
    with _cache_lock:  # one probe at a time; the others wait for its answer
        at, checks = _cache.get(str(data_dir), (0.0, []))
        if refresh or time.time() - at > CACHE_S:
            at, checks = _cache[str(data_dir)] = (time.time(), run_checks(data_dir))
    return at, checks


def worst_status(checks: list[dict]) -> str:
    """"error" if any check failed, else "warn" if any warned, else "ok"."""
    statuses = {c["status"] for c in checks}
    return "error" if "error" in statuses else "warn" if "warn" in statuses else "ok"


def format_report(checks: list[dict]) -> str:
    marks = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
    lines = []
    for c in checks:
        lines.append(f"[{marks[c['status']]}] {c['name']}: {c['value']}")
        if c["fix"] and c["status"] != "ok":
            lines.append(f"         fix: {c['fix']}")
        elif c["fix"]:
            lines.append(f"         note: {c['fix']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    checks = run_checks()
    print(json.dumps(checks, indent=2) if "--json" in argv else format_report(checks))
    return 1 if any(c["status"] == "error" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
