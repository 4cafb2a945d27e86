# Sourced by the scripts: create or refresh .venv from setup.py, then put it first on PATH.
# A stamp of setup.py's hash makes the refresh a no-op when nothing changed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.setup-stamp"
want="$(cat "$REPO/setup.py" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating $VENV ..." >&2
    python3 -m venv "$VENV"
fi
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    echo "installing the project and its dependencies into $VENV ..." >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO[test]" >&2
    echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export LUIGI_CONFIG_PATH="${LUIGI_CONFIG_PATH:-$REPO/luigi.cfg}"
cd "$REPO"
