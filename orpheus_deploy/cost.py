"""Estimated cost per hour while an instance runs, from Cloud Run's published list prices.

Cloud Run GPU services must use instance-based billing: CPU, memory and GPU are billed for the
whole life of an instance, idle or not, so "while the backend runs" is the number that matters
(scaled to zero it costs nothing). Prices are USD, Tier 1 regions (us-central1, europe-west1,
europe-west4, us-east4...), instance-based billing, without committed-use discounts, as published
at https://cloud.google.com/run/pricing on the date below. They change: treat the result as an
estimate, and see the pricing page for Tier 2 regions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orpheus_deploy.config import Settings

PRICES_AS_OF = "2025-06"
PRICING_URL = "https://cloud.google.com/run/pricing"

CPU_PER_VCPU_S = 0.000018  # instance-based billing
MEMORY_PER_GIB_S = 0.000002  # instance-based billing
GPU_PER_S = {
    # (gpu type, zonal redundancy) -> USD per second
    ("nvidia-l4", False): 0.0001867,
    ("nvidia-l4", True): 0.0002909,
}


def parse_cpu(value: str) -> float:
    """Cloud Run CPU limit ("4", "1000m") in vCPU."""
    value = value.strip()
    if value.endswith("m"):
        return float(value[:-1]) / 1000
    return float(value)


_MEMORY_UNITS = {"": 1 / 2**30, "k": 1e3 / 2**30, "M": 1e6 / 2**30, "G": 1e9 / 2**30,
                 "Ki": 2**10 / 2**30, "Mi": 2**20 / 2**30, "Gi": 1.0, "Ti": 2**10}


def parse_memory_gib(value: str) -> float:
    """Kubernetes-style quantity ("16Gi", "512Mi", "2G") in GiB."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(Ki|Mi|Gi|Ti|k|M|G)?\s*", value)
    if not match:
        raise ValueError(f"not a memory quantity: {value!r}")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


@dataclass(frozen=True)
class HourlyCost:
    cpu: float
    memory: float
    gpu: float | None  # None when the GPU type has no known price

    @property
    def total(self) -> float:
        return self.cpu + self.memory + (self.gpu or 0.0)

    def as_dict(self) -> dict[str, object]:
        return {"cpu_usd": round(self.cpu, 4), "memory_usd": round(self.memory, 4),
                "gpu_usd": None if self.gpu is None else round(self.gpu, 4),
                "total_usd": round(self.total, 4), "prices_as_of": PRICES_AS_OF,
                "source": PRICING_URL}


def backend_hourly_cost(settings: Settings) -> HourlyCost:
    """USD per hour for one running backend instance (GPU + its CPU and memory)."""
    gpu = GPU_PER_S.get((settings.gpu_type, settings.gpu_zonal_redundancy))
    return HourlyCost(
        cpu=parse_cpu(settings.backend_cpu) * CPU_PER_VCPU_S * 3600,
        memory=parse_memory_gib(settings.backend_memory) * MEMORY_PER_GIB_S * 3600,
        gpu=None if gpu is None else gpu * settings.gpu_count * 3600,
    )


# Storage, billed every month whether or not anything runs (list prices, same date as above):
# Cloud Storage Standard in a region such as us-central1, per GiB-month
# (https://cloud.google.com/storage/pricing), and Artifact Registry storage per GiB-month
# beyond the first 0.5 GiB free (https://cloud.google.com/artifact-registry/pricing).
STORAGE_PER_GIB_MONTH = 0.020
REGISTRY_PER_GIB_MONTH = 0.10
REGISTRY_FREE_GIB = 0.5
STORAGE_PRICING_URLS = ("https://cloud.google.com/storage/pricing",
                        "https://cloud.google.com/artifact-registry/pricing")


@dataclass(frozen=True)
class StorageCost:
    """What the deployment keeps in storage, in bytes, and its monthly list price."""

    model_bucket_bytes: int
    build_bucket_bytes: int
    registry_bytes: int

    @property
    def usd_per_month(self) -> float:
        buckets = (self.model_bucket_bytes + self.build_bucket_bytes) / 2**30
        registry = max(0.0, self.registry_bytes / 2**30 - REGISTRY_FREE_GIB)
        return buckets * STORAGE_PER_GIB_MONTH + registry * REGISTRY_PER_GIB_MONTH

    def as_dict(self) -> dict[str, object]:
        return {"model_bucket_bytes": self.model_bucket_bytes,
                "build_bucket_bytes": self.build_bucket_bytes,
                "registry_bytes": self.registry_bytes,
                "model_bucket_gib": round(self.model_bucket_bytes / 2**30, 3),
                "build_bucket_gib": round(self.build_bucket_bytes / 2**30, 3),
                "registry_gib": round(self.registry_bytes / 2**30, 3),
                "usd_per_month": round(self.usd_per_month, 2), "prices_as_of": PRICES_AS_OF,
                "sources": list(STORAGE_PRICING_URLS)}
