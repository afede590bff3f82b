"""What a measured step spent outside the model's own work: the evidence for slow steps.

Per optimizer step, in a variant's process:
- loader_s, host_s, sync_s: where the step's wall time went: fetching and collating the batch
  (from the previous step's end to this step's begin), the host issuing the work (begin to
  the end-of-step callback) and waiting for the device to finish it (the synchronisation);
- gc_s: time in Python's garbage collector (gc.callbacks);
- jit: Triton kernels compiled or loaded from Triton's disk cache during the step, with the
  seconds each took (Triton's jit_cache_hook / jit_post_compile_hook, where this Triton has them);
- cuda_mallocs, cuda_frees, alloc_retries: the CUDA caching allocator's calls to cudaMalloc /
  cudaFree and its free-everything-and-retry events (torch.cuda.memory_stats);
- compiled_frames: frames torch.compile (Dynamo) compiled during the step, e.g. Unsloth's
  compiled blocks recompiled for a new shape (Inductor compiles their Triton kernels in worker
  processes, which the Triton hooks above do not see).
A slow step with a Triton compile in it is a one-off cost of the first process that needs that
kernel on this machine; one with allocator retries is memory pressure; one with gc time is Python.
"""

from __future__ import annotations

import gc
import sys
import time

_ALLOCATOR_KEYS = {"cuda_mallocs": "num_device_alloc", "cuda_frees": "num_device_free",
                   "alloc_retries": "num_alloc_retries"}


class StepCosts:
    def __init__(self):
        import torch

        self._cuda = torch.cuda.is_available()
        self._memory_stats = torch.cuda.memory_stats
        self.steps: list[dict] = []
        self._gc_s = 0.0
        self._gc_started = 0.0
        self._jit: list[list] = []
        self._jit_started: dict[str, float] = {}
        self._marks = {"ended": None, "began": None, "host_done": None}
        self._allocator = self._allocator_counts()
        self._frames = self._compiled_frames()
        self.triton_hooks = self._install_triton_hooks()
        gc.callbacks.append(self._on_gc)

    # --- collectors ------------------------------------------------------------------------

    def _on_gc(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_s += time.perf_counter() - self._gc_started

    def _install_triton_hooks(self) -> str:
        try:
            from triton import knobs
        except Exception as exc:  # noqa: BLE001 - recorded: no per-kernel evidence then
            return f"not available ({type(exc).__name__})"
        runtime = knobs.runtime
        if runtime.jit_cache_hook is not None or runtime.jit_post_compile_hook is not None:
            return "not installed: another hook is set"

        def before(*, key, repr, **_):
            self._jit_started[str(key)] = time.perf_counter()
            return False  # False: compile as usual

        def after(*, key, repr, **_):
            started = self._jit_started.pop(str(key), None)
            seconds = time.perf_counter() - started if started else None
            self._jit.append([repr.split("[", 1)[0], None if seconds is None else round(seconds, 4)])
            return False

        runtime.jit_cache_hook, runtime.jit_post_compile_hook = before, after
        return "installed"

    @staticmethod
    def _compiled_frames() -> int:
        """Dynamo's count of frames it compiled so far (0 until something uses torch.compile)."""
        utils = sys.modules.get("torch._dynamo.utils")
        return int(utils.counters["frames"]["ok"]) if utils is not None else 0

    def _allocator_counts(self) -> dict:
        if not self._cuda:
            return {}
        stats = self._memory_stats()
        return {name: int(stats.get(key, 0)) for name, key in _ALLOCATOR_KEYS.items()}

    # --- per step --------------------------------------------------------------------------

    def train_began(self, now: float) -> None:
        """Forget what happened before training (model load, the first-batch check)."""
        self._gc_s, self._jit, self._allocator = 0.0, [], self._allocator_counts()
        self._frames = self._compiled_frames()
        self._marks["ended"] = now

    def step_began(self) -> None:
        self._marks["began"] = time.perf_counter()

    def host_done(self) -> None:
        """Called at the end-of-step callback, before the clock synchronises with the device."""
        self._marks["host_done"] = time.perf_counter()

    def step_ended(self, now: float) -> None:
        """`now`: the synchronised clock's reading at the end of the step."""
        counts = self._allocator_counts()
        frames = self._compiled_frames()
        ended, began, host = (self._marks[k] for k in ("ended", "began", "host_done"))
        split = {"loader_s": round(began - ended, 4), "host_s": round(host - began, 4),
                 "sync_s": round(now - host, 4)} if None not in (ended, began, host) else {}
        self.steps.append({**split, "gc_s": round(self._gc_s, 4), "jit": self._jit,
                           "compiled_frames": frames - self._frames,
                           **{k: counts[k] - self._allocator.get(k, 0) for k in counts}})
        self._marks["ended"] = now
        self._gc_s, self._jit, self._allocator, self._frames = 0.0, [], counts, frames

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def summary(self, warmup: int) -> dict:
        measured = self.steps[warmup:]
        return {
            "per_step": self.steps, "triton_hooks": self.triton_hooks,
            "measured_gc_s": round(sum(s["gc_s"] for s in measured), 4),
            "measured_jit_kernels": sum(len(s["jit"]) for s in measured),
            "measured_jit_s": round(sum(t or 0 for s in measured for _, t in s["jit"]), 4),
            "measured_alloc_retries": sum(s.get("alloc_retries", 0) for s in measured),
            "measured_compiled_frames": sum(s.get("compiled_frames", 0) for s in measured),
            "measured_cuda_mallocs": sum(s.get("cuda_mallocs", 0) for s in measured),
        }
