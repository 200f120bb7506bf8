#!/usr/bin/env bash
# A virtual environment outside the repo holding the peers the benchmarks compare against
# (open_clip, transformers) on torch 2.14.1, with clipforge installed editable from this checkout.
#
#     bench/setup_peers.sh [VENV]    # VENV defaults to $PEERS_VENV, else ~/.cache/clipforge/peers-venv
#
# Idempotent: each step is skipped when what it installs is already there. Every pip call after the
# first is constrained to torch 2.14.1 / torchvision 0.29.1, so no later install can swap torch.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${PEERS_VENV:-$HOME/.cache/clipforge/peers-venv}}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1

case "$(realpath -m "$VENV")/" in
  "$REPO"/*) echo "refusing to build the peers venv inside the repo: $VENV" >&2; exit 1 ;;
esac

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet)

PINS="$VENV/torch-pins.txt"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > "$PINS"

has() {  # has PYTHON_EXPRESSION: true when it evaluates truthy in the venv
  "$PY" -c "import sys; sys.exit(0 if ($1) else 1)" 2>/dev/null
}

if has "__import__('torch').__version__.split('+')[0] == '$TORCH_VERSION' and __import__('torchvision').__version__.split('+')[0] == '$TORCHVISION_VERSION'"; then
  echo "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION: already installed"
else
  echo "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION (a large download, a few minutes)"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if has "__import__('importlib.util').util.find_spec('open_clip') and __import__('importlib.util').util.find_spec('transformers')"; then
  echo "open_clip_torch, transformers: already installed"
else
  echo "installing open_clip_torch, transformers"
  "${PIP[@]}" -c "$PINS" open_clip_torch transformers
fi

if has "__import__('pathlib').Path(__import__('clipforge').__file__).resolve().is_relative_to('$REPO/src')"; then
  echo "clipforge (editable, $REPO): already installed"
else
  echo "installing clipforge editable from $REPO"
  "${PIP[@]}" --no-deps -e "$REPO"
fi
# clipforge's runtime dependencies, read from pyproject.toml; pip skips those already satisfied.
mapfile -t DEPS < <("$PY" -c "import tomllib; print('\n'.join(tomllib.load(open('$REPO/pyproject.toml', 'rb'))['project']['dependencies']))")
"${PIP[@]}" -c "$PINS" "${DEPS[@]}"
# the search extra, which index_build_speed.py's clipforge side builds its index with
"${PIP[@]}" -c "$PINS" faiss-cpu

"$PY" - <<EOF
import clipforge, open_clip, torch, transformers
assert torch.__version__.split("+")[0] == "$TORCH_VERSION", f"torch changed to {torch.__version__}"
print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, transformers {transformers.__version__}, "
      f"clipforge from {clipforge.__file__}")
EOF
echo "$PY"
