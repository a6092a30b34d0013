"""Admin API: schemathesis generates requests for every admin route from the published OpenAPI schema
(`/api/openapi.json`) and sends them to the real app (issue 10).

The oracle: no answer is a 5xx, every error is aiproxy's `{success: false, message}` envelope, and the app's own
output holds no traceback. The app is a fresh process of its own, since the cases create, change and delete
whatever they like. Left out: the routes that contact a URL (channel tests, test-preview, upstream models, the
OneAPI import) and the admin-key rotation, which would lock the rest of the run out; `test_admin_api.py` covers
those.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import aiproxy_local
from conftest import AppServer

MAX_EXAMPLES = 25  # per operation and mode (valid, invalid): about 2,000 cases, well under a minute
OUTBOUND_OR_LOCKOUT = r"/test|upstream-models|/import/|/admin_key/"


class Tally:
    def __init__(self, app: AppServer) -> None:
        self.app = app
        self.statuses: collections.Counter[int] = collections.Counter()

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


@pytest.fixture
def tally(start_app: Any) -> Iterator[Tally]:
    app = start_app(args=["--no-ui"])
    # the schema's id examples are 1: make a channel and an API key with that id, so examples reach real rows
    assert app.api("POST", "/api/channel/", json={"type": 1, "key": "sk-fuzz", "name": "fuzz"})["success"]
    assert app.api("POST", "/api/tokens/", json={"name": "fuzz"})["success"]
    counts = Tally(app)
    yield counts
    print(f"\nschemathesis: {counts.cases} cases, {counts.server_errors} answered 5xx, "
          f"by status {dict(sorted(counts.statuses.items()))}")
    assert counts.cases >= 500, "schemathesis sent too few cases to mean anything"
    assert counts.server_errors == 0
    assert "Traceback" not in app.output_tail(100_000), app.output_tail()
    assert app.api("GET", "/api/option/")["success"], "whatever was saved, the options still read"


# The schema the app publishes at /api/openapi.json, read in-process, and one Hypothesis run per operation inside
# one test, so every case goes to one app and one tally. (schemathesis.pytest.from_fixture relies on pytest internals
# that pytest 9.2 removed; a parametrized test would start an app per operation.)
SCHEMA = schemathesis.openapi.from_dict(aiproxy_local.admin_openapi()).exclude(path_regex=OUTBOUND_OR_LOCKOUT)


def test_generated_requests_never_get_a_5xx_and_errors_keep_the_envelope(tally: Tally) -> None:
    operations = [result.ok() for result in SCHEMA.get_all_operations()]
    assert len(operations) >= 30, "the schema lost its operations"
    for operation, mode in itertools.product(operations, GenerationMode):  # valid cases, then invalid ones
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(base_url=tally.app.url, headers=tally.app.headers, timeout=30)
            tally.statuses[response.status_code] += 1
            assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
            if response.status_code >= 400:
                body = response.json()
                assert body["success"] is False and isinstance(body["message"], str) and body["message"], body
                assert set(body) <= {"success", "message", "data"}, body

        try:
            check()
        except Unsatisfiable:  # an operation without parameters or body has no invalid form
            assert mode is GenerationMode.NEGATIVE, operation.label
