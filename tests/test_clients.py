"""App assembly & CLI; Anthropic Messages: the real Claude Code, Codex and Gemini CLI, each started by `aiproxy-local run <tool>`, on an
OpenAI, a DeepSeek-style, an Anthropic and a Gemini channel, saying hello and making one tool round trip.

The clients are the npm packages pinned in tests/clients/package-lock.json, installed by this module itself
(`npm ci --ignore-scripts` into tests/clients/node_modules, again only when the lock file changes). Install
scripts are not needed: Claude Code's postinstall only copies its native binary out of the platform package
(@anthropic-ai/claude-code-<platform>), which is run from there. Each client runs with a private HOME and the
launcher's private config dir, telemetry and auto-update off. The upstream is tests/agent_upstream.py, which
checks requests as the real APIs do.

Each of the 24 runs asserts: exit 0, the client printed the upstream's answer (for the tool run: the file names
its `ls` found, quoted back by the upstream), and every log row of the run has code 200, the client's endpoint,
and the upstream's own token counts.

Without node/npm (or offline) the module skips on a laptop; under CI=true it fails instead.
`AIPROXY_CLIENTS_DIR=<dir>` runs the clients installed in <dir> (tests/clients/latest.sh: the @latest ones), and
`AIPROXY_CLIENTS_TABLE=<file>` writes the matrix there as a Markdown table.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_upstream import COMPLETION_TOKENS, PROMPT_TOKENS, AgentUpstream
from conftest import APP_SCRIPT, REPO_ROOT, child_env, launch_app

PINNED_DIR = REPO_ROOT / "tests" / "clients"
CLIENTS_DIR = Path(os.environ.get("AIPROXY_CLIENTS_DIR") or PINNED_DIR)
RUN_TIMEOUT_S = 180
INSTALL_TIMEOUT_S = 900
IN_CI = os.environ.get("CI", "").lower() == "true"

#: channel kind → (type, the upstream's format prefix, its model, the answer's format name, extra channel fields)
CHANNELS: dict[str, tuple[int, str, str, dict[str, Any]]] = {
    "OpenAI": (1, "openai", "gpt-5-mini", {}),
    "DeepSeek": (36, "deepseek", "deepseek-chat", {"config": {"max_output_tokens": 8192}}),
    "Anthropic": (14, "anthropic", "claude-sonnet-4-5", {}),
    "Gemini": (24, "gemini", "gemini-2.5-flash", {}),
}
ASK_FILES = "List the files in the current directory using a tool"
#: Codex's own default (gpt-6.2-sol in 0.171) gets no tools on a custom provider: the runs name a gpt-5 model, which
#: every channel's `gpt-*` row serves
CODEX_MODEL = "gpt-5-mini"
#: tool → (its runs' arguments by task, the endpoint its log rows name)
CLIENT_RUNS: dict[str, tuple[dict[str, list[str]], str]] = {
    "claude": ({"hello": ["-p", "Say hello"], "tool": ["-p", ASK_FILES, "--allowedTools", "Bash"]}, "/v1/messages"),
    "codex": ({"hello": ["--model", CODEX_MODEL, "exec", "--skip-git-repo-check", "Say hello"],
               "tool": ["--model", CODEX_MODEL, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                        ASK_FILES]},
              "/v1/responses"),
    "gemini": ({"hello": ["-p", "Say hello"], "tool": ["--yolo", "-p", ASK_FILES]}, "/v1beta/models/"),
}
FILES = ("alpha.txt", "beta.py", "notes.md")
RESULTS: dict[tuple[str, str, str], str] = {}


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"the client conformance suite cannot run under CI=true: {why}", pytrace=False)
    pytest.skip(why)


def _lock_digest() -> str:
    return hashlib.sha256((PINNED_DIR / "package-lock.json").read_bytes()).hexdigest()


def install_pinned_clients() -> None:
    """`npm ci` into tests/clients/node_modules, unless it already holds what the lock file pins."""
    stamp = PINNED_DIR / "node_modules" / ".aiproxy-lock-sha256"
    if stamp.exists() and stamp.read_text().strip() == _lock_digest():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        _unavailable("node and npm are needed (Debian: apt-get install nodejs npm)")
    done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=PINNED_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        _unavailable(f"npm ci failed in {PINNED_DIR}: {done.stderr.strip()[-800:]}")
    stamp.write_text(_lock_digest() + "\n")


def claude_binary(modules: Path) -> Path | None:
    """Claude Code's native binary in its platform package (what its postinstall would copy to bin/claude.exe)."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "")
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform, "win32")
    for suffix in ("", "-musl"):
        binary = modules / "@anthropic-ai" / f"claude-code-{system}-{arch}{suffix}" / "claude"
        if binary.exists():
            return binary
    return None


@pytest.fixture(scope="module")
def clients_bin() -> Path:
    """A directory holding `claude`, `codex` and `gemini`, to put first on PATH."""
    if CLIENTS_DIR == PINNED_DIR:
        install_pinned_clients()
    modules = CLIENTS_DIR / "node_modules"
    binaries = {"claude": claude_binary(modules), "codex": modules / ".bin" / "codex",
                "gemini": modules / ".bin" / "gemini"}
    missing = [name for name, path in binaries.items() if path is None or not path.exists()]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed in {modules}")
    bin_dir = modules / ".aiproxy-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, path in binaries.items():
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve())
    return bin_dir


@pytest.fixture(scope="module")
def agent():
    upstream = AgentUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    server = launch_app(tmp_path_factory.mktemp("clients"), args=["--no-ui"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channels(gateway, agent) -> dict[str, int]:
    """One channel per kind, each mapping every name the clients ask for by default (claude-*, gpt-*, gemini-*)
    to its model; all disabled until a test enables its own."""
    ids = {}
    for kind, (ctype, prefix, model, extra) in CHANNELS.items():
        ids[kind] = gateway.add_channel(
            type=ctype, name=f"clients-{kind}", key=f"key-{prefix}", base_url=agent.base_url(prefix), models=[model],
            model_mapping={"claude-*": model, "gpt-*": model, "gemini-*": model}, status=2, **extra)
    return ids


def use_only(gateway, channels: dict[str, int], kind: str) -> None:
    for name, channel_id in channels.items():
        body = gateway.api("POST", f"/api/channel/{channel_id}/status", json={"status": 1 if name == kind else 2})
        assert body["success"], body


def run_tool(gateway, clients_bin: Path, tool: str, args: list[str], cwd: Path, home: Path,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`aiproxy-local --port P --data-dir D run TOOL ARGS…`, as a user types it."""
    env = child_env({"ADMIN_KEY": gateway.admin_key, "HOME": str(home), "PATH": f"{clients_bin}:{os.environ['PATH']}",
                     "NO_COLOR": "1", **(extra_env or {})})
    command = [sys.executable, str(APP_SCRIPT), "--port", str(gateway.port), "--data-dir", str(gateway.data_dir),
               "run", tool, *args]
    return subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


def rows_since(gateway, tool: str, since_ms: int, at_least: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        body = gateway.api("GET", "/api/logs/", params={"token_name": tool, "start_timestamp": since_ms,
                                                        "per_page": 100})
        rows = body["data"]["logs"]
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_text(f"{name}\n")
    return folder


@pytest.mark.parametrize("task", ["hello", "tool"])
@pytest.mark.parametrize("kind", list(CHANNELS))
@pytest.mark.parametrize("tool", list(CLIENT_RUNS))
def test_real_client(tool, kind, task, gateway, channels, clients_bin, workdir, tmp_path, agent):
    use_only(gateway, channels, kind)
    runs, endpoint = CLIENT_RUNS[tool]
    fmt = CHANNELS[kind][1]
    home = tmp_path / "home"
    home.mkdir()
    since = int(time.time() * 1000) - 1
    RESULTS[(tool, kind, task)] = "❌"
    seen = len(agent.app.requests)
    done = run_tool(gateway, clients_bin, tool, runs[task], workdir, home)
    calls = [(r["path"], r["refused"], sorted(r["json"] or {})) for r in agent.app.requests[seen:]]
    shown = (f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}\n"
             f"--- upstream calls\n{calls}")
    assert done.returncode == 0, shown
    if task == "hello":
        assert f"MOCK-HELLO from {fmt} upstream" in done.stdout, shown
    else:
        assert f"MOCK-TOOL-DONE ({fmt})" in done.stdout and all(name in done.stdout for name in FILES), shown
    rows = rows_since(gateway, tool, since, 2 if task == "tool" else 1)
    assert len(rows) >= (2 if task == "tool" else 1), rows
    for row in rows:
        assert row["code"] == 200, (row["endpoint"], row["model"], row["content"], calls)
        assert row["endpoint"].startswith(endpoint) and row["channel"] == channels[kind], row
        assert (row["prompt_tokens"], row["completion_tokens"], row["usage_estimated"]) == (
            PROMPT_TOKENS, COMPLETION_TOKENS, False), row
    RESULTS[(tool, kind, task)] = "✅"


@pytest.fixture(scope="module", autouse=True)
def matrix_table():
    """The matrix as a Markdown table, printed at the end (and written to AIPROXY_CLIENTS_TABLE if set)."""
    yield
    if not RESULTS:
        return
    lines = ["| client \\ channel | " + " | ".join(CHANNELS) + " |", "|---" * (len(CHANNELS) + 1) + "|"]
    for tool in CLIENT_RUNS:
        cells = [" ".join(f"{RESULTS.get((tool, kind, task), '·')} {task}" for task in ("hello", "tool"))
                 for kind in CHANNELS]
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    if os.environ.get("AIPROXY_CLIENTS_TABLE"):
        Path(os.environ["AIPROXY_CLIENTS_TABLE"]).write_text(table + "\n")
