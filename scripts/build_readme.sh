#!/usr/bin/env bash
# README.md is assembled from docs/sections/*.md (one file per part, in this order).
set -euo pipefail
cd "$(dirname "$0")/.."
order="00_intro cpu triton cuda probe toy toy_triton sweep reproduce 99_dev"
{
  for s in $order; do
    f="docs/sections/$s.md"
    [ -f "$f" ] || continue
    cat "$f"; echo
  done
} > README.md.tmp
mv README.md.tmp README.md
