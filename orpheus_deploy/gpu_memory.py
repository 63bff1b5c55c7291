"""Will the models fit on the GPU? The memory budget that `plan`, `deploy` and `upload-model`
check before anything is changed.

On the GPU, each resident model is one llama-server child process holding:

- its weights: the GGUF's size (every layer is offloaded);
- its KV cache: ``n_ctx`` cells (all parallel slots together, the router passes the same
  ``--ctx-size`` to every child) x layers x KV heads x (key + value head size) x 2 bytes (F16),
  from the GGUF header (orpheus_deploy/gguf_meta.py). Orpheus 3B: 112 KiB per token, so
  16384 cells = 1.75 GiB;
- an allowance for its CUDA context and compute buffers (MODEL_OVERHEAD_GIB). This one is an
  estimate, not a measurement: ``bench/gpu_backend.sh`` prints each child's real use from
  nvidia-smi, to replace it with a figure once it has run on an L4.

At most ``models_max`` models are resident at once (the router unloads the least recently used
one to load another), so the check is: the ``models_max`` largest footprints together must fit in
the GPU's memory less a reserve for the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import ConfigError
from orpheus_deploy.gguf_meta import ORPHEUS_3B

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.models import ModelEntry

GIB = 1 << 30
# Memory of one GPU of each Cloud Run GPU type, GiB (NVIDIA L4: 24 GB GDDR6).
GPU_MEMORY_GIB = {"nvidia-l4": 24.0}
# Not usable by models: the driver's own allocations and fragmentation (an allowance).
RESERVE_GIB = 1.5
# Per resident model: CUDA context and llama.cpp's compute buffers (an allowance, see above).
MODEL_OVERHEAD_GIB = 1.0


@dataclass(frozen=True)
class Footprint:
    name: str
    weights: int  # bytes
    kv_cache: int  # bytes
    overhead: int  # bytes
    assumed_dims: bool  # no dimensions recorded: Orpheus 3B's were used

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.name, "weights_gib": _gib(self.weights),
                "kv_cache_gib": _gib(self.kv_cache), "overhead_gib": _gib(self.overhead),
                "total_gib": _gib(self.total), "assumed_dims": self.assumed_dims}


@dataclass(frozen=True)
class MemoryBudget:
    gpu_type: str
    capacity: int | None  # bytes usable by models; None: unknown GPU type, not checked
    models_max: int
    n_ctx: int
    footprints: tuple[Footprint, ...]
    unknown_sizes: tuple[str, ...]  # models whose file size is not recorded

    @property
    def resident(self) -> tuple[Footprint, ...]:
        """The worst case: the ``models_max`` largest models loaded together."""
        ranked = sorted(self.footprints, key=lambda f: f.total, reverse=True)
        return tuple(ranked[:self.models_max])

    @property
    def need(self) -> int:
        return sum(f.total for f in self.resident)

    @property
    def checked(self) -> bool:
        return self.capacity is not None and not self.unknown_sizes

    @property
    def fits(self) -> bool:
        return not self.checked or self.need <= (self.capacity or 0)

    def most_that_fit(self) -> int:
        """How many of the largest models fit together (what models_max could be)."""
        total, count = 0, 0
        for f in sorted(self.footprints, key=lambda f: f.total, reverse=True):
            total += f.total
            if self.capacity is None or total > self.capacity:
                break
            count += 1
        return count

    def summary(self) -> str:
        if not self.footprints:
            return "no model registered yet"
        if self.capacity is None:
            return f"GPU memory of {self.gpu_type} unknown: not checked (set gpu_memory_gib)"
        if self.unknown_sizes:
            return (f"not checked: no size recorded for {', '.join(self.unknown_sizes)} "
                    "(re-run orpheus upload-model for it)")
        parts = " + ".join(f"{f.name} {_gib(f.weights):.2f} weights + {_gib(f.kv_cache):.2f} KV "
                           f"+ {_gib(f.overhead):.2f}" for f in self.resident)
        assumed = [f.name for f in self.resident if f.assumed_dims]
        note = f" (Orpheus 3B dimensions assumed for {', '.join(assumed)})" if assumed else ""
        return (f"{len(self.resident)} of {len(self.footprints)} models resident at most "
                f"(models_max {self.models_max}): {parts} = {_gib(self.need):.2f} GiB of "
                f"{_gib(self.capacity):.2f} GiB usable on {self.gpu_type}{note}")

    def check(self) -> None:
        """Raise ConfigError, with the numbers and what to change, when the plan cannot fit."""
        if self.fits:
            return
        fit = self.most_that_fit()
        hint = (f"set models_max = {fit} in orpheus.toml (the others load on demand, "
                "evicting the least recently used)" if fit >= 1 else
                "use smaller models (Q4_K_M), a smaller n_ctx, or a GPU with more memory")
        raise ConfigError(f"The models do not fit in GPU memory: {self.summary()}",
                          f"{hint}; or lower n_ctx (KV cache per model)")

    def as_dict(self) -> dict[str, Any]:
        return {"gpu_type": self.gpu_type,
                "capacity_gib": None if self.capacity is None else _gib(self.capacity),
                "models_max": self.models_max, "n_ctx": self.n_ctx, "checked": self.checked,
                "fits": self.fits, "need_gib": _gib(self.need),
                "resident": [f.name for f in self.resident],
                "models": [f.as_dict() for f in self.footprints], "summary": self.summary()}


def footprint(model: ModelEntry, n_ctx: int) -> Footprint:
    dims = model.dims or ORPHEUS_3B
    return Footprint(name=model.name, weights=model.size or 0,
                     kv_cache=n_ctx * dims.kv_bytes_per_token(),
                     overhead=int(MODEL_OVERHEAD_GIB * GIB), assumed_dims=model.dims is None)


def memory_budget(settings: Settings, models: Sequence[ModelEntry]) -> MemoryBudget:
    memory = settings.gpu_memory_gib or GPU_MEMORY_GIB.get(settings.gpu_type)
    capacity = int((memory - RESERVE_GIB) * GIB) if memory else None
    return MemoryBudget(
        gpu_type=settings.gpu_type, capacity=capacity,
        models_max=min(settings.models_max, len(models)) if models else settings.models_max,
        n_ctx=settings.n_ctx,
        footprints=tuple(footprint(m, settings.n_ctx) for m in models),
        unknown_sizes=tuple(m.name for m in models if not m.size))


def _gib(n: int) -> float:
    return round(n / GIB, 2)
