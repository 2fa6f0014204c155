"""Make the CUDA 13 libraries from NVIDIA's pip wheels loadable before implicit looks for them.

implicit's CUDA extension links ``libcudart``, ``libcublas``, ``libcublasLt`` and
``libcurand`` without a search path; the ``gpu`` extra installs them as pip wheels
under ``site-packages/nvidia/…/lib``, which the dynamic loader does not search. Loading
them once, globally, by full path, lets ``import implicit`` find its GPU solver.
"""

from __future__ import annotations

import ctypes
import logging
import site
import sys
from pathlib import Path

log = logging.getLogger(__name__)

LIBRARIES = ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10")
_loaded = False


def _candidates(name: str) -> list[Path]:
    roots = [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages(), *sys.path) if p]
    found: list[Path] = []
    for root in roots:
        nvidia = root / "nvidia"
        if nvidia.is_dir():
            found.extend(sorted(nvidia.glob(f"*/lib/{name}")) + sorted(nvidia.glob(f"*/*/lib/{name}")))
    return found


def preload() -> list[str]:
    """Load whichever of :data:`LIBRARIES` pip installed; return their paths (empty when none)."""
    global _loaded
    if _loaded:
        return []
    _loaded = True
    loaded = []
    for name in LIBRARIES:
        for path in _candidates(name):
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                log.debug("could not preload %s: %s", path, exc)
                continue
            loaded.append(str(path))
            break
    return loaded


def cuda_devices() -> tuple[int, str]:
    """How many CUDA devices the runtime sees, or 0 with the reason.

    Asks ``libcudart`` directly, after :func:`preload`, so a caller can skip a CUDA code
    path (and the errors a library prints when it fails to start one) where no GPU or no
    CUDA library is present.
    """
    preload()
    for name in (*LIBRARIES, "libcuda.so.1"):
        try:
            ctypes.CDLL(name)
        except OSError:
            return 0, f"{name} cannot be loaded"
    count = ctypes.c_int(0)
    status = ctypes.CDLL(LIBRARIES[0]).cudaGetDeviceCount(ctypes.byref(count))
    if status != 0:
        return 0, f"the CUDA runtime reports error {status} (no usable GPU)"
    return count.value, "" if count.value else "no CUDA device visible"
