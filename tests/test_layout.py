"""The shape of the one module: nine banners in request order, named in the docstring, one test file each."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "aiproxy_local.py").read_text(encoding="utf-8")
SECTIONS = ["Settings & app state", "Storage", "Provider catalog & adaptors", "Router", "Relay routes", "Log writer",
            "Admin API", "UI pages", "App assembly & CLI"]
TEST_FILES = ["test_settings.py", "test_storage.py", "test_providers.py", "test_router.py", "test_relay.py",
              "test_log_writer.py", "test_admin_api.py", "test_ui.py", "test_cli.py"]


def test_banners_are_in_request_order():
    banners = re.findall(r"^# ==== (\d+)\. ([^=:]+?)(?::.*?)? =+$", SOURCE, re.M)
    assert [(int(n), title.strip()) for n, title in banners] == list(enumerate(SECTIONS, start=1))


def test_docstring_lists_the_sections():
    docstring = SOURCE.split('"""')[1]
    for number, title in enumerate(SECTIONS, start=1):
        assert f"{number}. {title}" in docstring


def test_each_section_has_its_test_file():
    for name in TEST_FILES:
        assert (ROOT / "tests" / name).exists(), name


def test_data_lives_in_assets():
    assert (ROOT / "assets" / "providers.json").exists()
    assert "defaultBaseUrl" not in SOURCE.split("# ==== 3.")[0]  # no catalog rows typed into the code
