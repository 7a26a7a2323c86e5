"""A CPU run's memory, kept flat: two caches that grow with every new batch shape.

Unpadding (minbert/fast.py) makes the number of real tokens N, and so the shape of almost every
activation, different in every batch. Two things grow with that, measured on the full default run
(docs/PERFORMANCE.md, "Memory"):
  * oneDNN, which runs the bf16 matrix products, keeps a primitive with its scratch buffers for every
    shape it has seen, up to 1024 of them (ONEDNN_PRIMITIVE_CACHE_CAPACITY). A step's products come
    in a few dozen shapes, and no batch repeats the last one's, so a small cache loses nothing.
  * glibc malloc serves the activations from its heap. Freed blocks of one size seldom fit the next
    batch's sizes, so the heap fragments and grows step after step without bound.
    malloc_trim(0) hands the free pages back to the system; doing it every few steps bounds the
    growth at the cost of touching those pages again (a step's worth every RELEASE_EVERY steps).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ONEDNN_CACHE = 16  # primitives kept; about the distinct matrix-product shapes of one training step


def cap_onednn_cache(capacity: int = ONEDNN_CACHE) -> None:
    """Limit oneDNN's primitive cache, unless the user set it. oneDNN reads the variable when it first
    builds a primitive, so call this before the first matrix product (training/__init__.py does)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def _glibc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_TRIM = _glibc_trim()  # None off glibc (macOS, musl): nothing to do there


RELEASE_EVERY = 10  # steps between trims (docs/PERFORMANCE.md, "Memory"; 0: never)


def release(step: int | None = None) -> None:
    """Return the heap's free pages to the system (glibc only), every RELEASE_EVERY-th step (or now)."""
    if _TRIM is not None and (step is None or (RELEASE_EVERY > 0 and step % RELEASE_EVERY == 0)):
        _TRIM(0)
