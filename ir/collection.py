"""Python's cyclic garbage collector run less often while an IR is built or transformed.

An IR of a few thousand nodes is tens of thousands of container objects; at the default threshold
(a collection every 700 allocations) the collector walks them again and again, and once the IR
outgrows the imported modules' objects its full collections walk all of it (ViT-B/16: 10-15% of
the passes' CPU time; ``lower`` of a 128-layer decoder, half of it). Garbage without cycles is
still freed at once.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def fewer_collections(threshold: int = 10_000):
    """The collector run at most every ``threshold`` allocations inside; the process's threshold
    is put back after (nested uses keep the outer one's)."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
