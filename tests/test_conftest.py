"""tests/conftest.py's worker count: the cores a container's CPU quota leaves."""

from __future__ import annotations

import os

import pytest
from conftest import usable_cores


@pytest.mark.parametrize(
    ("files", "expect"),
    [
        ({}, None),  # no cgroup files: the affinity
        ({"cpu.max": "max 100000\n"}, None),  # v2, no quota
        ({"cpu.max": "150000 100000\n"}, 2),  # v2, --cpus=1.5: rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        (
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            1,
        ),
        ({"cpu.max": "garbage\n"}, None),
    ],
)
def test_usable_cores_follow_the_affinity_and_the_cgroup_quota(tmp_path, files, expect):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores(tmp_path) == min(cores, expect or cores)
