#!/usr/bin/env bash
# README.md is assembled from docs/sections/*.md (one file per part, in this order); the line
# '<!-- contents -->' becomes a list of links to every ## and ### heading outside code blocks.
# --check: change nothing; exit 1 when README.md is not what the sections give.
set -euo pipefail
cd "$(dirname "$0")/.."
order="00_intro cpu triton cuda probe toy toy_triton sweep reproduce 99_dev"
tmp=$(mktemp README.md.XXXXXX)
trap 'rm -f "$tmp"' EXIT
{
  for s in $order; do
    f="docs/sections/$s.md"
    [ -f "$f" ] || continue
    cat "$f"; echo
  done
} | "${PYTHON:-python3}" scripts/readme_contents.py > "$tmp"
if [ "${1:-}" = "--check" ]; then
  cmp -s "$tmp" README.md || { echo "README.md is stale: run bash scripts/build_readme.sh" >&2
                               exit 1; }
else
  chmod 644 "$tmp"
  mv "$tmp" README.md
fi
