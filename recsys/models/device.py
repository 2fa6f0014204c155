"""Choose where ALS trains: implicit's CUDA build on a GPU, else its CPU solver."""

from __future__ import annotations

import logging
from enum import StrEnum

from recsys.errors import DeviceUnavailable

log = logging.getLogger(__name__)


class Device(StrEnum):
    """Where training runs; ``auto`` picks the GPU when implicit can use one."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


def gpu_available() -> tuple[bool, str]:
    """Whether implicit's CUDA solver is usable here, with the reason when it is not."""
    try:
        import implicit.gpu
    except ImportError as exc:  # pragma: no cover - implicit is a hard dependency
        return False, f"implicit is not importable ({exc})"
    if not implicit.gpu.HAS_CUDA:
        return (
            False,
            "implicit was loaded without CUDA support (no CUDA 13 runtime / rmm-cu13, or no GPU)",
        )
    try:
        import implicit.gpu._cuda as cuda

        count = cuda.get_device_count()
    except Exception as exc:
        return False, f"CUDA runtime error ({exc})"
    return (count > 0, "" if count > 0 else "no CUDA device visible")


def resolve(requested: Device) -> Device:
    """The concrete device for a request; ``gpu`` without a usable GPU is an error."""
    if requested is Device.CPU:
        return Device.CPU
    ok, reason = gpu_available()
    if ok:
        log.info("training on GPU (implicit CUDA build)")
        return Device.GPU
    if requested is Device.GPU:
        raise DeviceUnavailable(f"--device gpu requested but {reason}")
    log.info("training on CPU: %s", reason)
    return Device.CPU
