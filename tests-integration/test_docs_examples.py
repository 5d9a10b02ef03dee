"""Every code block of README.md and docs/*.md works.

Conventions for documentation authors (also in docs/index.md):

- ```python blocks are executed, each in a fresh namespace (`__name__ == "__main__"`), in order,
  one subprocess per Markdown file, in an empty working directory, with no AVIONICS_*, OTEL_*
  or *_API_KEY variables. Use `assert` to state what a reader should see.
- A python block whose first line is `# requires: emulator` runs with a started
  `airframe.testing.Emulator` as `emu`, and these variables pointing at it:
  LLAMA_SERVER_URL, OPENAI_BASE_URL, ANTHROPIC_BASE_URL, OLLAMA_HOST (dummy OPENAI_API_KEY and
  ANTHROPIC_API_KEY), and AVIONICS_CONFIG: the demo settings (examples/demo/avionics.toml:
  agents planner, coder, critic) with every provider on the emulator.
- A python block whose first line is `# not run: <reason>` is only compiled.
- ```toml blocks are parsed; those made only of settings tables (providers, profiles, agents,
  ...) are loaded with `AvionicsSettings.from_file`, unless the first line is `# fragment`.
- Other blocks (```text, ```bash, ```console, ...) are not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REQUIRES_EMULATOR = "# requires: emulator"
NOT_RUN = "# not run:"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: str
    line: int
    lang: str
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """Fenced code blocks, with the 1-based line of their opening fence."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        info = match["info"].strip()
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        index += 1
        lang = info.split()[0].lower() if info else ""
        rel = str(path.relative_to(ROOT))
        found.append(Block(rel, start + 1, lang, info, "\n".join(body) + "\n"))
    return found


ALL_BLOCKS = [block for path in DOCS for block in blocks_of(path)]
PYTHON = [b for b in ALL_BLOCKS if b.lang in ("python", "py", "python3")]
TOML = [b for b in ALL_BLOCKS if b.lang == "toml"]


# -- python blocks: one runner subprocess per file, all files at once ----------------------------


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("AVIONICS_", "OTEL_"))
        and not k.upper().endswith("_API_KEY")
        and k not in ("LLAMA_SERVER_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_HOST")
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Block id -> {"ok": bool, "error": traceback text, "output": what it printed}."""
    by_file: dict[str, list[Block]] = {}
    for block in PYTHON:
        by_file.setdefault(block.path, []).append(block)
    procs = []
    for path, blocks in by_file.items():
        work = tmp_path_factory.mktemp(Path(path).stem)
        spec, results = work / "blocks.json", work / "results.json"
        spec.write_text(json.dumps([asdict(b) for b in blocks]))
        proc = subprocess.Popen(
            [sys.executable, __file__, str(spec), str(results)],
            cwd=work,
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((path, proc, results))
    found: dict[str, dict[str, Any]] = {}
    try:
        for path, proc, results in procs:
            _, err = proc.communicate(timeout=300)
            if results.exists():
                found.update(json.loads(results.read_text()))
            else:
                found[path] = {"ok": False, "error": f"the runner failed:\n{err}", "output": ""}
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return found


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(block: Block, outcomes: dict[str, dict[str, Any]]) -> None:
    outcome = outcomes.get(block.id) or outcomes.get(block.path)
    assert outcome is not None, f"{block.id} was not run"
    assert outcome["ok"], f"{block.id} failed:\n{outcome['error']}\noutput:\n{outcome['output']}"


# -- toml blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block", TOML, ids=[b.id for b in TOML])
def test_toml_block_is_valid(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avionics import AvionicsSettings

    data = tomllib.loads(block.code)
    if block.code.startswith("# fragment") or not data:
        return
    if not set(data) <= set(AvionicsSettings.model_fields):
        return  # another tool's file (pyproject.toml, ...)
    for name in list(os.environ):
        if name.upper().startswith("AVIONICS_"):
            monkeypatch.delenv(name)
    path = tmp_path / "avionics.toml"
    path.write_text(block.code)
    AvionicsSettings.from_file(path)


# -- the documentation itself --------------------------------------------------------------------


def test_blocks_were_found() -> None:
    readme = [b for b in PYTHON if b.path == "README.md"]
    assert len(readme) >= 2
    assert any(b.path == "README.md" for b in TOML)


def test_readme_settings_are_the_demo_settings() -> None:
    """The README's three-agent settings file is examples/demo/avionics.toml, verbatim."""
    shipped = (ROOT / "examples" / "demo" / "avionics.toml").read_text()
    assert any(b.path == "README.md" and b.code == shipped for b in TOML)


def test_relative_links_resolve() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_docs_index_links_every_doc() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        if doc.name != "index.md":
            assert f"({doc.name})" in index, f"docs/index.md does not link {doc.name}"


# -- the runner (executed as a script by the `outcomes` fixture) ---------------------------------


def _emulator_env(emu: Any, directory: Path) -> dict[str, str]:
    from avionics.demo import emulated_settings

    return {
        "LLAMA_SERVER_URL": emu.base_url("llama_server"),
        "OPENAI_BASE_URL": emu.base_url("openai"),
        "ANTHROPIC_BASE_URL": emu.base_url("anthropic"),
        "OLLAMA_HOST": emu.base_url("ollama"),
        "OPENAI_API_KEY": "sk-emulator",
        "ANTHROPIC_API_KEY": "sk-emulator",
        "AVIONICS_CONFIG": str(emulated_settings(emu, directory)),
    }


def _run_block(block: dict[str, Any], workdir: Path) -> dict[str, Any]:
    import contextlib
    import io
    import traceback

    code: str = block["code"]
    out = io.StringIO()
    compiled = compile(code, f"{block['path']}:{block['line']}", "exec")
    if code.startswith(NOT_RUN):
        return {"ok": True, "error": "", "output": ""}
    namespace: dict[str, Any] = {"__name__": "__main__"}
    saved = dict(os.environ)
    emu = None
    try:
        if code.startswith(REQUIRES_EMULATOR):
            from airframe.testing import Emulator

            emu = Emulator().start()
            namespace["emu"] = emu
            os.environ.update(_emulator_env(emu, workdir))
        with contextlib.redirect_stdout(out):
            exec(compiled, namespace)
        return {"ok": True, "error": "", "output": out.getvalue()}
    except BaseException:
        return {"ok": False, "error": traceback.format_exc(), "output": out.getvalue()}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if emu is not None:
            emu.stop()
        from avionics.settings import get_settings

        get_settings.cache_clear()


def _runner(spec: Path, results: Path) -> None:
    import tempfile

    blocks = json.loads(spec.read_text())
    found = {}
    for block in blocks:
        with tempfile.TemporaryDirectory() as workdir:
            os.chdir(workdir)
            found[f"{block['path']}:{block['line']}"] = _run_block(block, Path(workdir))
    results.write_text(json.dumps(found))


if __name__ == "__main__":
    _runner(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
