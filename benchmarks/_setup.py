"""Shared start-up for benchmark scripts: a Django environment on a scratch data directory."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def django_setup(data_dir: str | None = None, **env: str) -> Path:
    """Point Cairn at ``data_dir`` (a fresh temp dir by default), set up Django, migrate."""
    path = Path(data_dir or tempfile.mkdtemp(prefix="cairn-bench-"))
    os.environ["CAIRN_DATA_DIR"] = str(path)
    os.environ.setdefault("CAIRN_TASKS", "inline")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return path


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(_fmt(row.get(k)).ljust(widths[k]) for k in keys))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nwrote {path}")


def tree_stat(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process and its descendants (Uvicorn's workers, Celery's children)."""
    rss, cpu, todo = 0.0, 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss, cpu
