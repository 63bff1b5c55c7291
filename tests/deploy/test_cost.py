from __future__ import annotations

import pytest

from orpheus_deploy.config import Settings
from orpheus_deploy.cost import backend_hourly_cost, parse_cpu, parse_memory_gib


def test_default_backend_costs_about_a_dollar_an_hour() -> None:
    cost = backend_hourly_cost(Settings(project="p-123456"))
    # 4 vCPU * 0.000018 + 16 GiB * 0.000002 + L4 0.0001867 (no zonal redundancy), per second.
    assert cost.cpu == pytest.approx(0.2592)
    assert cost.memory == pytest.approx(0.1152)
    assert cost.gpu == pytest.approx(0.67212)
    assert cost.total == pytest.approx(1.04652)


def test_zonal_redundancy_costs_more() -> None:
    off = backend_hourly_cost(Settings(project="p-123456"))
    on = backend_hourly_cost(Settings(project="p-123456", gpu_zonal_redundancy=True))
    assert on.gpu is not None and off.gpu is not None and on.gpu > off.gpu


def test_unknown_gpu_has_no_price() -> None:
    cost = backend_hourly_cost(Settings(project="p-123456", gpu_type="nvidia-rtx-pro-6000"))
    assert cost.gpu is None
    assert cost.as_dict()["gpu_usd"] is None


@pytest.mark.parametrize(("text", "vcpu"), [("4", 4.0), ("1000m", 1.0), ("0.5", 0.5)])
def test_parse_cpu(text: str, vcpu: float) -> None:
    assert parse_cpu(text) == vcpu


@pytest.mark.parametrize(("text", "gib"), [("16Gi", 16.0), ("512Mi", 0.5), ("1Ti", 1024.0)])
def test_parse_memory(text: str, gib: float) -> None:
    assert parse_memory_gib(text) == gib


def test_parse_memory_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_memory_gib("lots")
