"""Settings & app state; Router; Relay pipeline; Log writer; Admin API; App assembly & CLI: the hardening of
issue 18: weak admin keys and throttled guessing, keys masked in every form an upstream may quote them in, request
ids that never clash (and a clash reported, never taken for "already written"), Retry-After values that are not
numbers, and a bug answered with its request id.

Over real HTTP where the behaviour is the gateway's (the app as a process, the openai SDK or httpx as clients, small
fake upstreams), as pure functions where it is a decision.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
import uvicorn

import aiproxy_local as app
from conftest import REPO_ROOT, eventually, free_port, launch_app, make_state, unique, wait_logs
from health_upstream import HealthUpstream

MESSAGES = [{"role": "user", "content": "hello"}]


# ---- part 2: a weak admin key, and guessing slowed per address ----

@pytest.mark.parametrize("key", ["1234", "token", "aiproxy", "sk-aiproxy", "TOKEN", "sk-xxxxxxxxxxxxxxxxxxxxxxxx",
                                 "sk-your-api-key-here-please", "short-but-rand"])
def test_weak_admin_keys_are_told_from_strong_ones(key):
    assert app.weak_admin_key(key)


@pytest.mark.parametrize("key", ["Zq3v8Kx1Lm0Pn7Rt", "test-admin-0123456789abcdef", app.generate_key()])
def test_strong_admin_keys_pass(key):
    assert app.weak_admin_key(key) == ""


def test_a_weak_admin_key_warns_on_loopback_and_refuses_any_other_bind(tmp_path):
    loopback = launch_app(tmp_path / "a", admin_key="1234", args=["--no-ui"])
    try:
        eventually(lambda: "admin key is weak" in loopback.output_tail(), what="the warning")
        assert "shorter than 16 characters" in loopback.output_tail()
    finally:
        loopback.stop()
    exposed = launch_app(tmp_path / "b", admin_key="aiproxy", args=["--no-ui", "--host", "0.0.0.0"], wait=False)
    try:
        assert exposed.proc.wait(30) != 0
        said = exposed.output_tail()
        assert "refusing to listen on 0.0.0.0 with a weak admin key" in said and "--allow-weak-admin-key" in said
        assert "well-known default" in said
    finally:
        exposed.stop()
    allowed = launch_app(tmp_path / "c", admin_key="aiproxy", args=["--no-ui", "--host", "0.0.0.0"],
                         env={"AIPROXY_ALLOW_WEAK_ADMIN_KEY": "1"})
    try:
        assert "WARNING: the admin key is weak" in allowed.output_tail()
    finally:
        allowed.stop()


THROTTLE_ENV = {"AUTH_FAILURES_ALLOWED": "3", "AUTH_LOCKOUT_SECONDS": "3"}  # waits of 3 s, then 6 s


def client_from(address: str) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x.y.z is this machine's loopback)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def test_guessing_keys_is_throttled_per_address_and_a_right_key_resets_it(tmp_path):
    server = launch_app(tmp_path, env=THROTTLE_ENV, args=["--no-ui"])
    wrong = {"Authorization": "Bearer not-the-key"}
    right = {"Authorization": f"Bearer {server.admin_key}"}
    chat = {"model": "m", "messages": MESSAGES}
    try:
        with client_from("127.0.0.2") as guesser, client_from("127.0.0.1") as user, client_from("127.0.0.3") as other:
            repeated = [guesser.get(f"{server.url}/api/channels/all", headers=wrong).status_code for _ in range(5)]
            assert repeated == [401] * 5  # one old key repeated is no guessing: counted once
            codes = [guesser.post(f"{server.url}/v1/chat/completions", json=chat,
                                  headers={"Authorization": "Bearer guess-2"}).status_code,
                     guesser.get(f"{server.url}/api/logs/", params={"key": "guess-3"}).status_code]
            assert codes == [401, 401]  # the third different key starts the first wait
            for answer in (guesser.get(f"{server.url}/api/channels/all", headers=wrong),
                           guesser.post(f"{server.url}/v1/chat/completions", headers=wrong, json=chat),
                           guesser.get(f"{server.url}/api/channels/all", headers=right)):  # even the right key
                assert answer.status_code == 429 and 1 <= int(answer.headers["retry-after"]) <= 3, answer.text
            assert "Too many wrong keys" in answer.json()["message"]
            gemini = guesser.post(f"{server.url}/v1beta/models/m:generateContent", json={"contents": []},
                                  headers={"x-goog-api-key": "nope"})
            assert gemini.status_code == 429 and gemini.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            # another address is never slowed, a right key or a wrong one
            assert user.get(f"{server.url}/api/channels/all", headers=right).status_code == 200
            assert other.get(f"{server.url}/api/channels/all", headers=wrong).status_code == 401
            # once the wait is over, one more wrong key starts a longer one
            eventually(lambda: guesser.get(f"{server.url}/api/channels/all", headers=wrong).status_code == 401,
                       what="the end of the first wait")
            assert guesser.get(f"{server.url}/api/channels/all",
                               headers={"Authorization": "Bearer guess-4"}).status_code == 401
            again = guesser.get(f"{server.url}/api/channels/all", headers=wrong)
            assert again.status_code == 429 and 3 < int(again.headers["retry-after"]) <= 6, again.text
            # a right key after the wait resets the address: three wrong keys are allowed again
            eventually(lambda: guesser.get(f"{server.url}/api/channels/all", headers=right).status_code == 200,
                       what="the end of the second wait")
            assert [guesser.get(f"{server.url}/api/channels/all", headers={"Authorization": f"Bearer again-{n}"})
                    .status_code for n in range(2)] == [401, 401]
        assert server.output_tail(400).count("127.0.0.2 sent") == 1  # named once, however often it waited
    finally:
        server.stop()


def test_the_throttle_forgets_quiet_addresses_and_never_grows_without_bound():
    throttle = app.AuthThrottle(allowed=2, lockout=5.0)
    assert throttle.failed("a", 0.0, "k1") == 0.0 and throttle.failed("a", 0.5, "k1") == 0.0  # the same key again
    assert throttle.failed("a", 1.0, "k2") == 5.0
    assert throttle.wait("a", 2.0) == 4.0 and throttle.wait("b", 2.0) == 0.0
    assert throttle.failed("a", 7.0, "k3") == 10.0 and throttle.failed("a", 18.0, "k4") == 20.0  # doubling
    throttle.succeeded("a")
    assert throttle.wait("a", 19.0) == 0.0
    throttle.failed("c", 0.0, "k1")
    assert throttle.failed("c", app.AUTH_WINDOW_S + 1, "k2") == 0.0  # a minute apart: counted afresh
    for n in range(app.AUTH_TRACKED_MAX + 5):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", 100.0 + n, "k")
    assert len(throttle.addresses) <= app.AUTH_TRACKED_MAX


# ---- part 3: a key quoted back in another encoding ----

class QuotingUpstream:
    """An OpenAI-style upstream that answers every call of a name with the body set for it (an error quoting the
    key in some encoding, as a real provider might), or a stream whose error event says it."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[int, bytes]] = {}
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        status, body = self.bodies.get(scope["path"].split("/")[1], (404, b"{}"))
        kind = b"text/event-stream" if body.startswith(b"data:") else b"application/json"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    def __enter__(self) -> QuotingUpstream:
        self.thread.start()
        eventually(lambda: self.server.started, what="the quoting upstream's start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


KEY = "sk-proj-Q7x/Zk+4mN_8pLw2RvT6yHc0Jb9sDfGa1eUo3iKq"  # "/" and "+" make every encoding differ


def quoted(form: str, key: str) -> str:
    """`key` as an upstream might quote it back."""
    return {
        "url": urllib.parse.quote(key, safe=""),
        "base64": base64.b64encode(f"user:{key}".encode()).decode(),
        "base64url": base64.urlsafe_b64encode(f"ab{key}".encode()).decode(),
        "upper": key.upper(),
        "split": f"{key[:20]} … {key[20:]}",
        "part": key[9:23],
        "json": key,  # written JSON-escaped below
    }[form]


def leaks(text: str, key: str) -> list[str]:
    """Every run of 12 characters of `key`, in any of the forms above, that `text` holds (case ignored)."""
    low = text.lower().replace("\\/", "/")
    forms = [key, urllib.parse.quote(key, safe=""), base64.b64encode(f"user:{key}".encode()).decode()[8:-4],
             base64.urlsafe_b64encode(f"ab{key}".encode()).decode()[4:-4]]
    return [f[i:i + 12] for f in forms for i in range(len(f) - 11) if f[i:i + 12].lower() in low]


FORMS = ["url", "base64", "base64url", "upper", "split", "part", "json"]


@pytest.fixture(scope="module")
def quoting(tmp_path_factory) -> Iterator[tuple[Any, QuotingUpstream]]:
    server = launch_app(tmp_path_factory.mktemp("quoting"), args=["--no-ui"])
    with QuotingUpstream() as up:
        yield server, up
    server.stop()


@pytest.mark.parametrize("form", FORMS)
def test_a_key_quoted_back_in_any_encoding_is_masked_everywhere(quoting, form):
    server, up = quoting
    model, name = unique("m"), unique("q")
    message = f"Incorrect API key provided: {quoted(form, KEY)}."
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}})
    if form == "json":
        body = body.replace("/", "\\/")
        assert "\\/" in body
    if True:
        up.bodies[name] = (401, body.encode())
        up.bodies[name + "s"] = (200, b"data: " + body.encode() + b"\n\n")
        cid = server.add_channel(base_url=up.url(name), models=[model], key=KEY)
        server.add_channel(base_url=up.url(name + "s"), models=[model + "s"], key=KEY)
        token = server.api("POST", "/api/tokens/", json={"name": unique("tok")})["data"]["key"]
        client = server.openai(api_key=token)
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model=model, messages=MESSAGES)
        assert "Incorrect API key provided" in info.value.response.text
        streamed = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                              json={"model": model + "s", "messages": MESSAGES, "stream": True}, timeout=30).text
        assert "Incorrect API key provided" in streamed
        test = server.api("GET", f"/api/channel/{cid}/test/{model}")["data"]
        rows = wait_logs(server, 2, model_name=model)
        details = [server.api("GET", f"/api/logs/detail/{r['id']}")["data"] for r in rows]
        csv = server.client.get("/api/logs/export", params={"model_name": model}).text
        places = {"answer": info.value.response.text, "stream": streamed, "test": test["response"],
                  "rows": json.dumps(rows), "details": json.dumps(details), "csv": csv}
    assert {where: leaks(text, KEY) for where, text in places.items() if leaks(text, KEY)} == {}


def test_scrubbing_masks_runs_and_keeps_the_rest():
    scrubber = app.key_scrubber([KEY])
    text = f"a {KEY[5:17]} b {KEY[:11]} c".encode()  # 12 characters are masked, 11 are not
    out = scrubber.scrub(text)
    assert KEY[5:17].encode() not in out and KEY[:11].encode() in out and out.startswith(b"a ")
    assert scrubber.scrub(b"nothing secret here at all") == b"nothing secret here at all"
    assert app.key_scrubber(["short-key"]) is None  # nothing of 12 characters to find


# ---- part 4: request ids that never clash, and a clash reported ----

def test_request_ids_differ_across_instances_even_at_the_same_instant():
    """Two instances (or a restart) asking for ids while their clocks read the same: each id still differs.
    The old ids (µs + a per-process sequence) were equal here."""
    script = ("import time, aiproxy_local as a\n"
              "time.time_ns = lambda: 1_700_000_000_000_000_000\n"
              "print(' '.join(a.new_request_id() for _ in range(200)))\n")
    runs = [subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert len(set(runs[0]) | set(runs[1])) == 400
    assert all(len(i) <= 64 and i.startswith("1700000000000000") for i in runs[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_request_ids_differ_between_a_process_and_its_forked_child_at_the_same_instant(monkeypatch):
    """The random part comes from a generator in memory (no system call per id): a forked child reseeds it, or
    it would draw the very bits its parent draws next."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids to the parent, then out without running the parent's clean-up
        os.write(write, " ".join(app.new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    mine = [app.new_request_id() for _ in range(50)]
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode().split()
    os.waitpid(pid, 0)
    assert len(theirs) == 50 and not set(theirs) & set(mine)


def log_row(request_id: str, request_at: int, tokens: int) -> app.LogEntry:
    row = {"request_id": request_id, "request_at": request_at, "created_at": request_at + 50, "model": "m",
           "channel": 1, "code": 200, "mode": 1, "endpoint": "/v1/chat/completions", "input_tokens": tokens,
           "output_tokens": 1, "total_tokens": tokens + 1, "retry_times": 0, "token_id": 0, "is_test": False,
           "cached_tokens": 0, "used_amount": 0.0, "ttfb_milliseconds": 1}
    return app.LogEntry(row, None, 0)


def test_a_journal_replay_that_meets_another_call_under_the_same_id_keeps_both_and_says_so(tmp_path, caplog):
    engine = app.make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    app.create_schema(engine)
    app.LogWriter(engine).write_batch([log_row("clash", 1_700_000_000_000, 7)])  # another call's row
    crashed = app.LogWriter(engine)
    crashed.open_journal(tmp_path / "journal")
    crashed.submit(log_row("clash", 1_700_000_001_000, 9))  # this call: same id, answered, not yet written
    crashed.submit(log_row("same", 1_700_000_002_000, 3))
    crashed.write_batch([crashed.pending[1]])  # written, but the crash came before the journal was trimmed
    os.close(crashed.journal._fd)
    os.close(crashed.journal._lock_fd)
    writer = app.LogWriter(engine)
    with caplog.at_level(logging.ERROR, logger="aiproxy_local"):
        assert writer.open_journal(tmp_path / "journal") == 1
    assert writer.write_batch(writer.pending) == []
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT request_id, input_tokens FROM logs ORDER BY id")).all()
    assert sorted(rows) == [("clash", 7), ("clash", 9), ("same", 3)]
    assert "request id clash" in caplog.text and "clash" in caplog.text


def test_a_stored_response_under_another_calls_id_never_overwrites_it(tmp_path):
    engine = app.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    app.create_schema(engine)
    first = {"id": "resp_1", "created_at": 1_700_000_000_000, "token_id": 1, "native_channel": 0, "model": "m",
             "previous_response_id": "", "input_items": [{"role": "user", "content": "one"}],
             "answer": {"id": "resp_1", "output": "first"}}
    app.save_stored_response(engine, first)
    app.save_stored_response(engine, first)  # the same answer again (a replay): harmless
    with pytest.raises(app.IdClash):
        app.save_stored_response(engine, dict(first, created_at=first["created_at"] + 5, token_id=2,
                                              answer={"id": "resp_1", "output": "second"}))
    assert app.load_stored_response(engine, "resp_1", None, {})["answer"]["output"] == "first"


async def test_the_response_store_keeps_the_first_answer_of_a_clashing_id(tmp_path, caplog):
    engine = app.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    app.create_schema(engine)
    store = app.ResponseStore()
    writer = app.LogWriter(engine, store)  # stored answers are written with the log writer's batches
    writer.start()
    row = {"id": "resp_2", "created_at": 1, "token_id": 0, "native_channel": 0, "model": "m",
           "previous_response_id": "", "input_items": [], "answer": {"output": "first"}}
    with caplog.at_level(logging.ERROR, logger="aiproxy_local"):
        store.remember(row)
        store.remember(dict(row, created_at=2, answer={"output": "second"}))  # still in memory: refused there
        await writer.flush()
        store.remember(dict(row, created_at=3, answer={"output": "third"}))  # written: refused by the writer
        await writer.stop()
    assert store.pending == {}
    assert (await store.recall(engine, "resp_2", app.ADMIN_CALLER))["answer"]["output"] == "first"
    assert caplog.text.count("response id clash") == 2


# ---- part 7: Retry-After values that are not a number of seconds or a date ----

@pytest.mark.parametrize("value", ["nan", "-inf", "inf", "-5", "1e400", "garbage", "1_000", "0x10", ""])
def test_a_retry_after_that_is_no_number_of_seconds_or_date_is_ignored(value):
    assert app.retry_after_seconds(value, 0.0) is None and app.valid_retry_after(value) == ""


def test_a_retry_after_in_seconds_or_as_a_date_is_honoured():
    assert app.retry_after_seconds("20", 0.0) == 20 and app.valid_retry_after(" 7 ") == "7"
    assert app.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10


def test_a_bad_retry_after_gets_the_default_cooldown_and_never_reaches_the_client(tmp_path):
    fake = HealthUpstream().start()
    server = launch_app(tmp_path, args=["--no-ui"], env={"CHANNEL_COOLDOWN_SECONDS": "10",
                                                         "CHANNEL_COOLDOWN_MAX_SECONDS": "30", "RETRY_TIMES": "0"})
    try:
        for value in ("nan", "-inf", "-5", "1e400", "garbage"):
            model, name = unique("m"), unique("ra")
            fake.set(name, status=429, message="Rate limit reached", retry_after=value)
            cid = server.add_channel(base_url=fake.url(name), models=[model])
            answer = httpx.post(f"{server.url}/v1/chat/completions", headers=server.headers, timeout=30,
                                json={"model": model, "messages": MESSAGES})
            assert answer.status_code == 429 and "retry-after" not in answer.headers, (value, answer.headers)
            (cooldown,) = server.api("GET", f"/api/channel/{cid}")["data"]["cooldowns"]
            assert 9 < cooldown["seconds_left"] <= 10, (value, cooldown)  # the default, not 0 nor the cap
        model, name = unique("m"), unique("ra")
        fake.set(name, status=429, message="Rate limit reached", retry_after="20")
        server.add_channel(base_url=fake.url(name), models=[model])
        answer = httpx.post(f"{server.url}/v1/chat/completions", headers=server.headers, timeout=30,
                            json={"model": model, "messages": MESSAGES})
        assert answer.headers["retry-after"] == "20"
    finally:
        server.stop()
        fake.stop()


# ---- part 1, the last line of defence: a bug answers with the request id, never a traceback ----

async def test_a_bug_is_a_500_that_names_the_request_id_and_is_logged(tmp_path, monkeypatch, caplog):
    state = make_state(tmp_path, admin_key="admin-key-0123456789")

    def broken(*args: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(app, "plan_channels", broken)
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    scope = {"type": "http", "method": "POST", "path": "/v1/messages", "query_string": b"", "client": ("10.0.0.9", 1),
             "headers": [(b"authorization", b"Bearer admin-key-0123456789"), (b"content-type", b"application/json")]}
    incoming = iter([{"type": "http.request", "body": body, "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.ERROR, logger="aiproxy_local"):
        await app.relay(state, scope, receive, send)
    start, answer = sent[0], json.loads(sent[1]["body"])
    request_id = dict(start["headers"])[b"x-request-id"].decode()
    assert start["status"] == 500 and answer["type"] == "error"  # in the door's own shape (Anthropic's here)
    assert request_id in answer["error"]["message"] and "Traceback" not in sent[1]["body"].decode()
    assert "ZeroDivisionError" in caplog.text  # the traceback is the server log's
    (row,) = [e.row for e in state.writer.pending]
    assert row["request_id"] == request_id and row["code"] == 500 and request_id in row["content"]
