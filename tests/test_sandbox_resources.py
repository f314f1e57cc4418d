"""The sandbox's memory bounds, measured: one run's processes together, and the pool's runs together."""

import json

import pytest
from sandbox_backends import AVAILABLE, KERNEL, backend_params

from rewards import SandboxConfig
from rewards.sandbox import Sandbox

REAL = backend_params(KERNEL)

# Four children, each holding 100 MB of touched memory: 400 MB across the run, each process well under RLIMIT_AS.
FOUR_CHILDREN = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        block = bytearray(100 << 20)
        time.sleep(3)
        os._exit(0)
time.sleep(3)
print("survived")
"""


@pytest.mark.parametrize("isolation", REAL)
def test_one_runs_processes_share_its_memory(isolation):
    with Sandbox(SandboxConfig(timeout_s=8, memory_mb=256, isolation=isolation), max_workers=1) as sandbox:
        capped = sandbox.run(FOUR_CHILDREN)
    assert capped.status == "memory_limit" and "survived" not in capped.stdout, capped
    assert int(capped.detail) > 256 << 20  # what the supervisor saw when it stopped the run
    with Sandbox(SandboxConfig(timeout_s=8, memory_mb=1024, isolation=isolation), max_workers=1) as sandbox:
        roomy = sandbox.run(FOUR_CHILDREN)
    assert roomy.status == "ok" and roomy.stdout == "survived\n", roomy


@pytest.mark.parametrize("isolation", REAL)
def test_tmpfs_files_count_as_the_runs_memory(isolation):
    """55 MB in /tmp and 55 MB in the work dir: each fits its 64 MB tmpfs, together they pass a 96 MB run."""
    program = (
        "import time\nfor path in ('/tmp/a', 'b'):\n    open(path, 'wb').write(b'x' * (55 << 20))\n"
        "time.sleep(1)\nprint('kept')"
    )
    for memory_mb, expected in ((96, "memory_limit"), (256, "ok")):
        config = SandboxConfig(timeout_s=8, memory_mb=memory_mb, max_file_size_mb=64, isolation=isolation)
        with Sandbox(config, max_workers=1) as sandbox:
            result = sandbox.run(program)
        assert result.status == expected, (memory_mb, result)


def test_the_pool_runs_only_what_its_memory_allows():
    """pool_memory_mb // memory_mb runs at once, whatever max_workers says: measured from the runs' own clocks."""
    program = "import time, json\nstart = time.time()\ntime.sleep(0.6)\nprint(json.dumps([start, time.time()]))"
    first_usable = next(name for name, why_not in AVAILABLE.items() if why_not is None)
    config = SandboxConfig(timeout_s=10, memory_mb=256, isolation=first_usable)
    with Sandbox(config, max_workers=4, pool_memory_mb=512) as sandbox:
        assert sandbox.concurrent_runs == 2
        results = sandbox.run_many([(program, "")] * 6)
    spans = [json.loads(result.stdout) for result in results]
    overlap = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert overlap == 2, spans
    with pytest.raises(ValueError, match="less than one run's memory_mb"):
        Sandbox(config, pool_memory_mb=128)
