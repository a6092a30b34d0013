"""The shape of the one module: numbered banners in request order, listed in the docstring, each section with the
test file(s) that cover it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "aiproxy_local.py").read_text(encoding="utf-8")
BANNERS = [(int(n), title.split(":")[0].strip(), line) for line, n, title in
           ((m.start(), m.group(1), m.group(2)) for m in re.finditer(r"^# ==== (\d+)\. (.+?) =+$", SOURCE, re.M))]

#: every section's test files: a new banner without an entry here fails test_each_section_has_its_test_files
TEST_FILES = {
    "Settings & app state": ["test_settings.py"],
    "Storage": ["test_storage.py"],
    "Relay contract": ["test_providers.py"],
    "Router": ["test_router.py", "test_health.py"],
    "Relay pipeline": ["test_relay.py"],
    "OpenAI & Azure": ["test_providers.py"],
    "Anthropic Messages": ["test_anthropic.py"],
    "Google Gemini": ["test_gemini.py"],
    "OpenAI Responses": ["test_responses.py"],
    "Formats not served yet, and the registry": ["test_providers.py"],
    "Log writer": ["test_log_writer.py"],
    "Admin API": ["test_admin_api.py", "test_admin_schema.py"],
    "Import": ["test_import.py"],
    "UI kit": ["test_ui.py"],
    "UI pages": ["test_ui.py", "test_ui_health.py", "test_journey.py"],
    "Migrate wizard": ["test_ui_migrate.py", "test_ui_migrate_aiproxy.py"],
    "App assembly & CLI": ["test_cli.py"],
}


def test_banners_are_numbered_in_order():
    assert [n for n, _, _ in BANNERS] == list(range(1, len(BANNERS) + 1))


def test_docstring_lists_the_sections():
    docstring = SOURCE.split('"""')[1]
    for number, title, _ in BANNERS:
        assert f"{number}. {title}" in docstring


def test_each_section_has_its_test_files():
    for _, title, _ in BANNERS:
        assert TEST_FILES.get(title), f"section '{title}' names no test file in TEST_FILES"
        for name in TEST_FILES[title]:
            assert (ROOT / "tests" / name).exists(), name
    assert set(TEST_FILES) == {title for _, title, _ in BANNERS}, "TEST_FILES names a section that is gone"


def test_data_lives_in_assets():
    assert (ROOT / "assets" / "providers.json").exists()
    assert not re.search(r'"defaultBaseUrl":\s*"', SOURCE)  # no catalog row typed into the code
