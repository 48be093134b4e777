"""The documentation cannot rot: snippets run, links resolve, API is current."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SNIPPETS = [
    pytest.param(page, index, code, id=f"{page.name}-{index}")
    for page in PAGES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


@pytest.mark.parametrize("page, index, code", SNIPPETS)
def test_python_snippet_runs(tmp_path, monkeypatch, page, index, code):
    monkeypatch.chdir(tmp_path)  # snippets write their run folders here
    exec(compile(code, f"{page.name}[{index}]", "exec"), {"__name__": "__snippet__"})


def test_every_page_has_been_checked():
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_api_reference_is_current():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_api.py"), "--check"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr
