"""The shape of the one module. Numbered banners in request order, listed in the docstring, none too long, each
section covered by the test files whose docstrings name it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "aiproxy_local.py").read_text(encoding="utf-8")
BANNERS = [(int(n), title.split(":")[0].strip(), line) for line, n, title in
           ((m.start(), m.group(1), m.group(2)) for m in re.finditer(r"^# ==== (\d+)\. (.+?) =+$", SOURCE, re.M))]

SECTION_MAX_LINES = 1300  # bottle.py's largest section is 838 lines; past this a section hides what it holds


def sections_named(test_file: Path) -> set[str]:
    """The sections a test file covers, named before the first colon of its docstring's first line
    ("Router; Relay pipeline: channel health …"); a first line without a colon names none (a test of a test tool)."""
    first = test_file.read_text(encoding="utf-8").split('"""')[1].split("\n")[0]
    return {title.strip() for title in first.split(":")[0].split(";")} if ":" in first else set()


NAMED = {path.name: sections_named(path) for path in sorted((ROOT / "tests").glob("test_*.py"))}
TITLES = {title for _, title, _ in BANNERS}


def test_banners_are_numbered_in_order():
    assert [n for n, _, _ in BANNERS] == list(range(1, len(BANNERS) + 1))


def test_docstring_lists_the_sections():
    docstring = SOURCE.split('"""')[1]
    for number, title, _ in BANNERS:
        assert f"{number}. {title}" in docstring


def test_each_section_has_its_test_files():
    """A new section (a wire format, say) needs no entry here: its test file's docstring names it."""
    for title in TITLES:
        assert any(title in named for named in NAMED.values()), \
            f"no test file names section '{title}' at the start of its docstring ('{title}: …')"
    assert NAMED["test_health.py"] == {"Router", "Relay pipeline"} and NAMED["test_fake_upstream.py"] == set()


def test_test_files_name_sections_that_exist():
    for name, named in NAMED.items():
        assert named <= TITLES, f"{name}'s docstring names {named - TITLES}, not a section title"


def test_no_section_is_too_long():
    ends = [line for _, _, line in BANNERS[1:]] + [len(SOURCE)]
    for (number, title, start), end in zip(BANNERS, ends):
        lines = SOURCE.count("\n", start, end)
        assert lines <= SECTION_MAX_LINES, f"section {number}. {title} has {lines} lines; split it"


def test_data_lives_in_assets():
    assert (ROOT / "assets" / "providers.json").exists()
    assert not re.search(r'"defaultBaseUrl":\s*"', SOURCE)  # no catalog row typed into the code
