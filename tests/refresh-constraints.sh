#!/usr/bin/env bash
# Refresh tests/constraints.txt on purpose: a brand-new virtualenv gets the newest releases that pyproject.toml
# allows, the whole suite runs in it, and only a green run rewrites the lock. Run from a checkout's root.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e '.[test]'
CI=true "$venv/bin/pytest" -q
{ sed -n '/^#/p' tests/constraints.txt; "$venv/bin/pip" freeze --exclude-editable | grep -iv '^aiproxy-local'; } \
    > tests/constraints.txt.new
mv tests/constraints.txt.new tests/constraints.txt
git --no-pager diff --stat tests/constraints.txt
