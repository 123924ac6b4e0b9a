"""Every README snippet runs as pasted, on a CPU-only machine.

Fenced blocks tagged ``bash`` or ``python`` are run in README order in one scratch folder, with this
clone's ``.venv/bin`` (or the running interpreter's bin folder) first on PATH, CUDA hidden. Blocks
tagged ``text`` are listings (synopses with placeholders), not commands. The set-up block (``make``
targets) is CI itself; it is checked against the Makefile and .ci/run instead of being re-run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer((ROOT / "README.md").read_text())]


def _is_setup(lang: str, code: str) -> bool:
    lines = [ln.split("#")[0].strip() for ln in code.splitlines()]
    return lang == "bash" and all(ln.startswith("make ") for ln in lines if ln)


def test_setup_block_names_real_make_targets() -> None:
    setup = [code for lang, code in readme_blocks() if _is_setup(lang, code)]
    assert setup, "the README has no set-up block of make targets"
    makefile = (ROOT / "Makefile").read_text()
    targets = {t for code in setup for t in re.findall(r"^make (\w+)", code, re.M)}
    assert {"demo", "test"} <= targets
    for t in targets:
        assert re.search(rf"^{t}:", makefile, re.M), f"README names `make {t}`, the Makefile has no such target"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_snippet_runs_as_pasted(tmp_path: Path) -> None:
    blocks = [(lang, code) for lang, code in readme_blocks() if lang in ("bash", "python")
              and not _is_setup(lang, code)]
    assert any(lang == "python" for lang, _ in blocks) and any(lang == "bash" for lang, _ in blocks)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for i, (lang, code) in enumerate(blocks):
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (f"README {lang} block {i + 1} failed (exit {res.returncode}):\n{code}\n"
                                     f"--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}")
