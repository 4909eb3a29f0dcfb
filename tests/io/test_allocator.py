"""keep_freed_memory: freed large blocks stay in the process, so reusing them costs no page
faults. Run in a child process: the setting is process-wide and cannot be undone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from tasp_hloc.runtime.allocator import keep_freed_memory
    assert keep_freed_memory()
elif sys.argv[1] == "tasp":  # a user's own TaSP(), as the README's Python example builds it
    from tasp_hloc import TaSP
    TaSP({"weights": None, "max_keypoints": 16}).eval().extract(torch.rand(3, 64, 64))
elif sys.argv[1] == "script":  # the one line docs/extraction.md gives a user's own script
    import tasp_hloc
    assert tasp_hloc.keep_freed_memory()
elif sys.argv[1] == "hub":  # an entry point: torch.hub.load
    model = torch.hub.load(sys.argv[2], "tasp", source="local", pretrained=False, max_keypoints=16)
    model.extract(torch.rand(3, 64, 64))
def step():  # a network's activations: blocks of several sizes, alive together, then freed
    blocks = [torch.ones(mib << 20, dtype=torch.uint8) for mib in (1, 2, 4, 8, 16, 48, 8, 4)]
    del blocks
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[1:]))  # the fewest page faults of a step once the heap is grown
"""


REPO = str(Path(__file__).resolve().parents[2])  # hubconf.py


def minor_faults(mode: str, env=None) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, REPO],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    block_48mib = (48 << 20) // 4096  # pages over glibc's largest mmap threshold (32 MiB)
    assert minor_faults("glibc") >= block_48mib  # unmapped when freed: touched afresh
    assert minor_faults("keep") < block_48mib // 100


def test_not_glibc_changes_nothing(monkeypatch):
    from tasp_hloc.runtime import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_entry_points_keep_freed_memory_and_a_forward_never_does():
    """The setting is process-wide: a plain TaSP forward leaves it alone, the documented one
    line in a user's script and torch.hub (an entry point) set it, TASP_KEEP_FREED_MEMORY=0
    opts the entry points out."""
    block_48mib = (48 << 20) // 4096
    assert minor_faults("tasp") >= block_48mib
    assert minor_faults("script") < block_48mib // 100
    assert minor_faults("hub") < block_48mib // 100
    opted_out = {**os.environ, "TASP_KEEP_FREED_MEMORY": "0"}
    assert minor_faults("hub", opted_out) >= block_48mib


def test_leave_default_stops_tasp_from_changing_it(monkeypatch):
    from tasp_hloc.runtime import allocator

    calls = []
    monkeypatch.setattr(allocator, "_decided", False)
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    allocator.leave_default()
    assert allocator.keep_freed_memory_once() is False and not calls
