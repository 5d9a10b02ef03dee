#!/usr/bin/env bash
# Run uv, installing it from PyPI with pip first when it is missing (fresh machines have only Python).
set -euo pipefail
if command -v uv >/dev/null 2>&1; then
  exec uv "$@"
fi
if ! python3 -m uv --version >/dev/null 2>&1; then
  echo "uv not found: installing it from PyPI with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv >&2 \
    || python3 -m pip install --quiet --disable-pip-version-check --user uv >&2
fi
exec python3 -m uv "$@"
