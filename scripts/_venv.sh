# Shared by scripts/demo and scripts/test: create .venv and install fleetrisk.
# Usage: . scripts/_venv.sh EXTRAS   (EXTRAS: "" or "test")
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "fleetrisk needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
if [[ ! -x "$repo/.venv/bin/python" ]]; then
    echo "creating $repo/.venv"
    "$python" -m venv "$repo/.venv"
fi
venv_python="$repo/.venv/bin/python"
stamp="$repo/.venv/.fleetrisk-installed-${1:-runtime}"
if [[ ! -f "$stamp" || "$repo/setup.cfg" -nt "$stamp" ]]; then
    echo "installing fleetrisk${1:+[$1]} into .venv (first run: about a minute)"
    "$venv_python" -m pip install --quiet --upgrade pip
    "$venv_python" -m pip install --quiet -e "$repo${1:+[$1]}"
    touch "$stamp"
fi
export PATH="$repo/.venv/bin:$PATH"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$repo/.venv/numba-cache}"
