#!/usr/bin/env bash
# Run the client conformance matrix (tests/test_clients.py) against each client's @latest from npm instead of the
# versions pinned in package-lock.json, and print the table: a client release that breaks the gateway shows here
# the day it ships. Usage: tests/clients/latest.sh [pytest args…]   (needs node, npm and the test venv active)
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/package.json" <<'JSON'
{"name": "aiproxy-local-clients-latest", "private": true, "version": "0.0.0",
 "dependencies": {"@anthropic-ai/claude-code": "latest", "@openai/codex": "latest", "@google/gemini-cli": "latest"}}
JSON
( cd "$work" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null ) || exit 1
for pkg in @anthropic-ai/claude-code @openai/codex @google/gemini-cli; do
    echo "$pkg $(node -p "require('$work/node_modules/$pkg/package.json').version")"
done
AIPROXY_CLIENTS_DIR="$work" AIPROXY_CLIENTS_TABLE="$work/table.md" \
    python -m pytest -q -p no:cacheprovider "$root/tests/test_clients.py" "$@" >"$work/pytest.log" 2>&1
status=$?
[ "$status" -eq 0 ] || tail -n 60 "$work/pytest.log"
cat "$work/table.md" 2>/dev/null || echo "(no table: the suite did not run; see the log above)"
exit "$status"
