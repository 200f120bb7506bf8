"""keep_freed_memory: large blocks come from the heap, not from a fresh mmap each time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Prints the bytes glibc holds in mmapped blocks while a 64 MiB tensor is alive, before and after the call.
PROBE = """
import ctypes, torch
from clipforge.core.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_while_alive():
    block = torch.empty(64 << 20, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd
    del block
    return mapped

before = mapped_while_alive()
kept = keep_freed_memory()
print(kept, before >= 64 << 20, mapped_while_alive() < 64 << 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")
def test_after_keep_freed_memory_a_large_block_is_not_mmapped_per_allocation():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "True"]
