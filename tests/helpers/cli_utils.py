"""Helpers of the CLI tests: fake entry points and a fake installed plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent


def entry_point(name: str, value: str, group: str = "adamp_core.backends") -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=group)


def install_fake_plugin(site: Path, entry_points: dict[str, dict[str, str]]) -> dict[str, str]:
    """Write a dist-info declaring ``entry_points`` into ``site``; return the environment
    under which a child interpreter sees it and the fake modules (PYTHONPATH)."""
    dist = site / "fake_adamp_plugin-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-adamp-plugin\nVersion: 0.0\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    path = os.pathsep.join(p for p in (str(site), str(HERE), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("ADAMP_FAKE_ENV", None)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m adamp_core ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "adamp_core", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
