"""Docs that cannot drift: every block of README.md and docs/*.md that shows output is run and compared.

Refresh the shown outputs after a legitimate change: `.venv/bin/python tests/test_docs.py --update [FILE ...]`
(every block of the given files, or of all of them, slow ones included; it rewrites the python and console
outputs, and a doctest's expected output is edited by hand; `--list` lists the blocks and how each is run).

What counts as a block with shown output, and how each is run (one test case per block, named FILE:LINE):

- a ```python block whose last lines are comments `# ...` (or a lone `#`): those lines are the output. The
  code above them runs in a fresh `python` (this interpreter) in an empty temporary directory, and its
  stdout must equal the comment lines;
- a ```console / ```sh block, or an indented block (in a list item too), whose first line starts with
  `$ `: each `$ COMMAND` runs with bash in one temporary directory (the venv's bin first on PATH), and
  its stdout and stderr together must equal the lines below it, up to the next `$ `;
- a block with `>>>` lines in docs/*.md runs as a doctest (README.md's run by pytest's --doctest-glob);
- a ```yaml block under `<!-- same config as preset NAME -->` must validate to the preset's config hash.

Only trailing whitespace is normalised. Every block runs on the CPU (CUDA_VISIBLE_DEVICES is emptied) with one
torch thread (OMP_NUM_THREADS=1: training results depend on the thread count, e.g. the digits CNN's).
HTML comments on the lines just above a block (blank lines may separate them) mark it:
`<!-- slow -->` (it takes more than about 5 s: a `slow` test, skipped by `make test-fast`) and
`<!-- not run: REASON -->` (it shows output but is not executed; the test is skipped with REASON) and
`<!-- needs data: NAME -->` (it reads the files of data set NAME, `preadapt.worlds.datasets.SOURCES`; where they
are absent the test is skipped and names the Debian package that provides them).
A block that prints timings or paths must be made to print something stable; the harness does not mask.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds per block
SLOW_SECONDS = 5.0  # a block above this should carry <!-- slow -->

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
CONSOLE_LANGS = {"console", "sh", "shell", "bash", "shell-session"}


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence, or of the first line of an indented block
    kind: str  # python, console, doctest, config, or none (shows no output)
    lang: str
    indent: str  # the prefix of each content line (four spaces for an indented block)
    body: list[str]  # the content lines, prefix removed
    markers: list[str] = field(default_factory=list)
    code: str = ""  # python / doctest / yaml source
    commands: list[str] = field(default_factory=list)  # console: the commands, without "$ "
    expected: list[list[str]] = field(default_factory=list)  # one list of output lines per command (python: one)

    @property
    def id(self) -> str:
        return f"{_shown(self.path)}:{self.line}"

    @property
    def slow(self) -> bool:
        return "slow" in self.markers

    @property
    def not_run(self) -> str | None:
        for marker in self.markers:
            if marker.startswith("not run:"):
                return marker.removeprefix("not run:").strip()
            if marker.startswith("needs data:"):
                absent = _data_absent(marker.removeprefix("needs data:").strip())
                if absent is not None:
                    return absent
        if self.kind == "doctest" and self.path.name == "README.md":
            return "run by pytest's --doctest-glob=README.md"
        return None

    @property
    def preset(self) -> str | None:
        for marker in self.markers:
            if marker.startswith("same config as preset "):
                return marker.removeprefix("same config as preset ").strip()
        return None


def _data_absent(name: str) -> str | None:
    """Why data set ``name``'s files cannot be read here (naming its Debian package), or None."""
    from preadapt.worlds.datasets import SOURCES, DatasetError

    try:
        SOURCES[name].stamp()
    except DatasetError as error:
        return f"needs the Debian package {SOURCES[name].package} ({error})"
    return None


def _markers(lines: list[str], start: int) -> list[str]:
    """The HTML comments on the lines just above lines[start] (blank lines may separate them)."""
    found, i = [], start - 1
    while i >= 0 and (not lines[i].strip() or MARKER.match(lines[i])):
        if lines[i].strip():
            found.append(MARKER.match(lines[i])["text"])
        i -= 1
    return found[::-1]


def _classify(block: Block) -> Block:
    body = [line.rstrip() for line in block.body]
    if block.lang in ("python", "py", "pycon", "") and any(line.startswith(">>>") for line in body):
        block.kind, block.code = "doctest", "\n".join(body) + "\n"
    elif block.lang in ("python", "py"):
        k = len(body)
        while k > 0 and (body[k - 1].startswith("# ") or body[k - 1] == "#"):
            k -= 1
        if 0 < k < len(body):
            block.kind, block.code = "python", "\n".join(body[:k]) + "\n"
            block.expected = [[line[2:] for line in body[k:]]]
    elif block.lang in CONSOLE_LANGS | {"indented"} and body and body[0].startswith("$ "):
        block.kind = "console"
        for line in body:
            if line.startswith("$ "):
                block.commands.append(line[2:])
                block.expected.append([])
            else:
                block.expected[-1].append(line)
    elif block.lang in ("yaml", "yml") and block.preset:
        block.kind, block.code = "config", "\n".join(body) + "\n"
    return block


def parse(path: Path, text: str | None = None) -> list[Block]:
    """Every code block of a markdown file, fenced or indented, classified."""
    lines = (path.read_text() if text is None else text).split("\n")
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            fence, indent = match["fence"], match["indent"]
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                j += 1
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:j]]
            blocks.append(_classify(Block(path, i + 1, "none", match["lang"].lower(), indent, body,
                                          _markers(lines, i))))
            i = j + 1
            continue
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        if (len(indent) >= 4 and lines[i].strip() and not MARKER.match(lines[i])
                and (i == 0 or not lines[i - 1].strip() or MARKER.match(lines[i - 1]))):
            # an indented block (inside a list item too): the lines at the first line's indentation or deeper
            j = i
            while j < len(lines) and (lines[j].startswith(indent) or not lines[j].strip()):
                j += 1
            while not lines[j - 1].strip():
                j -= 1
            body = [line[len(indent):] for line in lines[i:j]]
            blocks.append(_classify(Block(path, i + 1, "none", "indented", indent, body, _markers(lines, i))))
            i = j
            continue
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in parse(path)]


def runnable(blocks: list[Block]) -> list[Block]:
    return [block for block in blocks if block.kind != "none"]


# --- running ---------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "CUDA_VISIBLE_DEVICES": "",
            "PYTHONHASHSEED": "0", "COLUMNS": "100", "NO_COLOR": "1", "PYTHONWARNINGS": "ignore",
            # one torch thread, as the suite's workers have (tests/conftest.py): results of float reductions,
            # and so the shown numbers, would otherwise depend on the machine's number of cores
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


DOCTEST = """
import doctest, sys
test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {"__name__": "__main__"}, sys.argv[1], sys.argv[1], 0)
runner = doctest.DocTestRunner()
runner.run(test)
sys.exit(1 if runner.failures else 0)
"""

CONFIG = """
import sys
from preadapt import load_config
documented = load_config(sys.argv[1]).config_hash()
preset = load_config(preset=sys.argv[2]).config_hash()
print("same config hash" if documented == preset else f"{sys.argv[1]}: {documented}, preset {sys.argv[2]}: {preset}")
"""


class BlockFailed(AssertionError):
    pass


def run_block(block: Block, cwd: Path) -> list[list[str]]:
    """Run a block in cwd; return its output, one list of lines per command (python: one)."""
    env = _env()
    if block.kind == "python":
        done = subprocess.run([sys.executable, "-c", block.code], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT)
        if done.returncode != 0:
            raise BlockFailed(f"{block.id}: exit status {done.returncode}\n{done.stdout}{done.stderr[-4000:]}")
        return [_lines(done.stdout)]
    if block.kind == "console":
        outputs = []
        for command in block.commands:
            done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
            outputs.append(_lines(done.stdout))
        return outputs
    if block.kind == "doctest":
        done = subprocess.run([sys.executable, "-c", DOCTEST, block.id], input=block.code, cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode != 0:
            raise BlockFailed(f"{block.id}: doctest failed\n{done.stdout}{done.stderr[-4000:]}")
        return []
    if block.kind == "config":
        (cwd / "documented.yaml").write_text(block.code)
        done = subprocess.run([sys.executable, "-c", CONFIG, "documented.yaml", block.preset], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode != 0 or done.stdout.strip() != "same config hash":
            raise BlockFailed(f"{block.id}: not the config of preset {block.preset}\n{done.stdout}{done.stderr}")
        return []
    raise ValueError(f"{block.id}: nothing to run")


def expected(block: Block) -> list[list[str]]:
    return [_lines("\n".join(lines)) for lines in block.expected]


def mismatch(block: Block, actual: list[list[str]]) -> str | None:
    if actual == expected(block) or block.kind in ("doctest", "config"):
        return None
    shown = _render_output(block, expected(block))
    got = _render_output(block, actual)
    diff = "\n".join(difflib.unified_diff(shown, got, "shown in the doc", "actual", lineterm=""))
    return (f"{block.id}: the output differs from the doc\n{diff}\nIf the change is legitimate, refresh it: "
            f".venv/bin/python tests/test_docs.py --update {_shown(block.path)}")


# --- update mode -----------------------------------------------------------------------------------------


def _render_output(block: Block, outputs: list[list[str]]) -> list[str]:
    """The block's content lines (without its prefix) with outputs in place of the shown ones."""
    if block.kind == "python":
        code = block.code.rstrip("\n").split("\n")
        return code + [f"# {line}" if line else "#" for line in outputs[0]]
    lines = []
    for command, output in zip(block.commands, outputs):
        lines += [f"$ {command}", *output]
    return lines


def _replace(text: str, path: Path, new_bodies: dict[tuple, list[str]]) -> tuple[str, list[str]]:
    """Rewrite, in the current text of path, each block whose code matches a key of new_bodies."""
    lines = text.split("\n")
    replaced = []
    for block in sorted(parse(path, text), key=lambda block: -block.line):  # bottom up: line numbers hold
        key = _key(block)
        if key not in new_bodies:
            continue
        start = block.line if block.lang != "indented" else block.line - 1  # first content line (0-based)
        end = start + len(block.body)
        new = [f"{block.indent}{line}" if line else "" for line in new_bodies[key]]
        if lines[start:end] != new:
            lines[start:end] = new
            replaced.append(block.id)
    return "\n".join(lines), replaced


def _key(block: Block) -> tuple:
    return (block.kind, block.code, tuple(block.commands))


def update(paths: list[Path]) -> int:
    failures = 0
    for path in paths:
        new_bodies, total = {}, 0.0
        for block in runnable(parse(path)):
            if block.not_run:
                print(f"{block.id:28} {block.kind:8} not run: {block.not_run}")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                try:
                    outputs = run_block(block, Path(tmp))
                except BlockFailed as error:
                    print(error)
                    failures += 1
                    continue
                seconds = time.perf_counter() - start
            total += seconds
            note = ""
            if seconds > SLOW_SECONDS and not block.slow:
                note = f"  (over {SLOW_SECONDS:g} s: mark it <!-- slow -->)"
            print(f"{block.id:28} {block.kind:8} {seconds:6.1f} s{' slow' if block.slow else ''}{note}")
            if block.kind in ("python", "console"):
                new_bodies[_key(block)] = _render_output(block, outputs)
        text = path.read_text()  # re-read: the file may have been edited while the blocks ran
        new_text, replaced = _replace(text, path, new_bodies)
        if new_text != text:
            path.write_text(new_text)
        print(f"{_shown(path)}: {total:.1f} s, {len(replaced)} block(s) rewritten {replaced or ''}")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for block in all_blocks():
            state = "runs" if block.kind != "none" and not block.not_run else (
                f"not run: {block.not_run}" if block.not_run else "shows no output")
            print(f"{block.id:28} {block.lang or '-':9} {block.kind:8} {'slow ' if block.slow else ''}{state}")
        return 0
    if "--update" in argv:
        names = [arg for arg in argv if not arg.startswith("--")]
        return update([Path(name).resolve() for name in names] if names else doc_files())
    print(__doc__)
    return 2


# --- the tests -------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # the update mode needs no pytest
    pytest = None

if pytest is not None:
    def _params():
        return [pytest.param(block, id=block.id, marks=[pytest.mark.slow] if block.slow else [])
                for block in runnable(all_blocks())]

    @pytest.mark.parametrize("block", _params())
    def test_doc_block(block: Block, tmp_path):
        if block.not_run:
            pytest.skip(f"not run: {block.not_run}")
        problem = mismatch(block, run_block(block, tmp_path))
        assert problem is None, problem

    def test_the_harness_finds_every_kind_of_block(tmp_path):
        doc = tmp_path / "doc.md"
        doc.write_text("\n".join([
            "```python", "print(1 + 1)", "# 2", "```", "",
            "```python", "x = 1  # no output shown", "```", "",
            "<!-- slow -->", "", "    $ echo hi", "    hi", "    $ echo there", "    there", "",
            "<!-- not run: needs a cluster -->", "```console", "$ ray start", "started", "```", "",
            "    an indented block without a prompt",
        ]))
        blocks = parse(doc)
        assert [(b.line, b.kind, b.slow, b.not_run) for b in blocks] == [
            (1, "python", False, None), (6, "none", False, None), (12, "console", True, None),
            (18, "console", False, "needs a cluster"), (23, "none", False, None)]
        assert mismatch(blocks[0], run_block(blocks[0], tmp_path)) is None
        assert mismatch(blocks[2], run_block(blocks[2], tmp_path)) is None
        assert "-# 2\n+# 3" in mismatch(blocks[0], [["3"]])
        text, replaced = _replace(doc.read_text(), doc, {_key(blocks[0]): ["print(1 + 1)", "# 3"],
                                                         _key(blocks[2]): ["$ echo hi", "ho", "$ echo there", "x"]})
        assert replaced == ["doc.md:12", "doc.md:1"]
        assert "print(1 + 1)\n# 3\n```" in text and "    $ echo hi\n    ho\n    $ echo there\n    x\n" in text

    def test_a_doctest_block_in_docs_runs_and_fails_loudly(tmp_path):
        doc = tmp_path / "doc.md"
        doc.write_text("```python\n>>> print(1 + 1)\n2\n```\n\n```pycon\n>>> 1 + 1\n3\n```\n")
        good, bad = parse(doc)
        assert (good.kind, bad.kind, good.not_run) == ("doctest", "doctest", None)
        assert run_block(good, tmp_path) == []
        with pytest.raises(BlockFailed, match="Expected:\n    3\nGot:\n    2"):
            run_block(bad, tmp_path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
