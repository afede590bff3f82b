"""The CUDA libraries' files in the OS page cache: measured, warmed before the first variant.

Why: CUDA loads a library's kernels lazily, at their first launch. On a fresh machine the
library files (cuBLAS, cuDNN, ... several GB) are not in the page cache yet, so the first
process that needs a new kernel, often mid-step at a new batch shape, waits for the disk while
the GPU idles. Only the first process on a machine pays this, which in a benchmark is the
baseline's first variant. Reading the files once before any variant (spec.warm_libraries)
gives every variant the same warm start; the runner records what it read and how long it took.

  python -m trainers.benchmark.page_cache resident|warm|evict

prints the files' resident share, warms them, or (for the experiment in
benchmarks/gpu/experiments/page_cache.sh) asks the kernel to drop them from the cache again.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import mmap
import os
import sys
import time
from pathlib import Path

# Packages whose shared libraries a training process loads kernels from.
PACKAGES = ("torch", "nvidia", "triton", "bitsandbytes", "xformers")
_CHUNK = 16 * 2**20


def _package_dirs(name: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(name)  # finds the package without importing it
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def library_files() -> list[Path]:
    """Every shared library file (*.so, *.so.N) under the packages, each once."""
    seen, files = set(), []
    for name in PACKAGES:
        for root in _package_dirs(name):
            for path in sorted(root.rglob("*.so*")):
                real = path.resolve()
                if real.is_file() and real not in seen and ".so" in real.name:
                    seen.add(real)
                    files.append(real)
    return files


def _resident_pages(path: Path) -> tuple[int, int]:
    """(pages in the page cache, pages) of one file, by mincore(2) on a read-only mapping."""
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    with open(path, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return 0, pages
        try:
            vec = ctypes.create_string_buffer(pages)
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return 0, pages
            return sum(b & 1 for b in vec.raw), pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)


def resident(files: list[Path]) -> dict:
    """How much of the files is in the page cache now."""
    cached = total = 0
    for path in files:
        c, t = _resident_pages(path)
        cached, total = cached + c, total + t
    return {"files": len(files), "bytes": total * mmap.PAGESIZE,
            "resident_share": cached / total if total else None}


def warm(files: list[Path]) -> dict:
    """Read every file once, so later processes find it in the page cache."""
    before = resident(files)
    started, read = time.perf_counter(), 0
    buf = bytearray(_CHUNK)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                read += n
    seconds = time.perf_counter() - started
    return {"files": len(files), "bytes_read": read, "seconds": round(seconds, 2),
            "resident_share_before": before["resident_share"],
            "resident_share_after": resident(files)["resident_share"]}


def evict(files: list[Path]) -> dict:
    """Ask the kernel to drop the files' clean pages (posix_fadvise DONTNEED; no root needed).
    Pages a running process has mapped stay; the experiment calls this between processes."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return resident(files)


def main(argv: list[str]) -> int:
    actions = {"resident": resident, "warm": warm, "evict": evict}
    if len(argv) != 1 or argv[0] not in actions:
        print("usage: python -m trainers.benchmark.page_cache resident|warm|evict",
              file=sys.stderr)
        return 2
    print(json.dumps(actions[argv[0]](library_files())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
