"""Faulting in the pages of a version's mapped files before it serves.

A loaded version maps its large arrays from their files (item factors, kNN similarity, the
HNSW index) instead of reading them into memory. A page is then read and entered in the
process's page table the first time a request touches it: many small waits spread over a
new version's first requests. Worse, page-cache pages that no process maps can be dropped
by the kernel once they have gone unused for a while (on the virtual machines we measured,
after about a minute), so the first searches of a version may each wait on the disk.

:func:`populate` does all of that up front, in the thread that loads the version, before it
serves: ``madvise(MADV_POPULATE_READ)`` (Linux 5.14+) in slices, each a foreign call that
releases the GIL, so the threads answering requests keep running. Elsewhere it reads one
byte of each page instead.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
from collections.abc import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

MADV_POPULATE_READ = 22
"""Linux's ``madvise`` advice that faults a range in for reading (``<linux/mman.h>``)."""
SLICE_BYTES = 1 << 20
"""Bytes per call. With 16 MB slices a served 2.36M-track swap had requests over 100 ms
during the warm-up (most likely other threads waiting on the memory-map lock the call
holds, the loader thread running at a lower priority); with 1 MB slices (about 60 µs each
when cached) none were seen."""


def _madvise() -> Callable[[int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _madvise()


def populate(arrays: Iterable[np.ndarray], *, slice_bytes: int = SLICE_BYTES) -> int:
    """Fault in every page of ``arrays`` for reading; returns the bytes covered.

    Arrays that live in ordinary memory are already in place and cost one quick call per
    slice. Nothing is copied and nothing is allocated: file pages are mapped where they are.
    """
    total = 0
    for array in arrays:
        if array.nbytes == 0:
            continue
        start, end = _bounds(array)
        total += end - start
        if not _advise(start, end, slice_bytes):
            _touch(start, end, slice_bytes)
    return total


def _bounds(array: np.ndarray) -> tuple[int, int]:
    """Addresses of the lowest byte of ``array`` and one past its highest (any strides)."""
    first = int(array.__array_interface__["data"][0])
    steps = [(n - 1) * s for n, s in zip(array.shape, array.strides, strict=True)]
    low = sum(step for step in steps if step < 0)
    high = sum(step for step in steps if step > 0)
    return first + low, first + high + array.itemsize


def _advise(start: int, end: int, slice_bytes: int) -> bool:
    """``MADV_POPULATE_READ`` over [start, end) in slices; ``False`` where it is not supported."""
    if _MADVISE is None:
        return False
    address = start - start % mmap.PAGESIZE
    while address < end:
        length = min(slice_bytes, end - address)
        if _MADVISE(address, length, MADV_POPULATE_READ) != 0:
            code = ctypes.get_errno()
            if code in (errno.EINVAL, errno.ENOSYS):
                return False
            reason = errno.errorcode.get(code, str(code))
            log.warning("madvise failed on a mapped array (%s): its pages load on demand", reason)
            return True
        address += length
    return True


def _touch(start: int, end: int, slice_bytes: int) -> None:
    """Read one byte of every page over [start, end)."""
    address = start - start % mmap.PAGESIZE
    first_byte = ctypes.cast(address, ctypes.POINTER(ctypes.c_ubyte))
    pages = np.ctypeslib.as_array(first_byte, shape=(end - address,))[:: mmap.PAGESIZE]
    step = max(1, slice_bytes // mmap.PAGESIZE)
    for first in range(0, len(pages), step):
        int(pages[first : first + step].max())
