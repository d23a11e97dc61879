#!/usr/bin/env bash
# Mutation testing with cosmic-ray (pip install cosmic-ray), one module at a
# time, each with the tests that pin its behaviour. Not part of CI: it takes
# minutes per module. Run from the repository root:
#   bash benchmarks/mutation/run.sh [key_frames boxes vid_eval ...]
# Writes benchmarks/mutation/<module>.txt (cr-report) and prints the totals.
# cosmic-ray mutates the module in place: after interrupting a run,
# `git checkout -- <module>` restores it.
set -euo pipefail
cd "$(dirname "$0")/../.."
modules=("${@:-key_frames boxes vid_eval}")
for name in ${modules[@]}; do
  config="benchmarks/mutation/$name.toml"
  session="$(mktemp -d)/$name.sqlite"
  .venv/bin/cosmic-ray init "$config" "$session"
  .venv/bin/cr-filter-operators "$session" "$config"
  .venv/bin/cosmic-ray baseline "$config"
  .venv/bin/cosmic-ray exec "$config" "$session"
  .venv/bin/cr-report "$session" > "benchmarks/mutation/$name.txt"
  module="$(grep -oP 'module-path = "\K[^"]+' "$config")"
  git diff --quiet -- "$module" || echo "warning: $module differs from git after the run (a mutant left behind?)" >&2
  tail -3 "benchmarks/mutation/$name.txt"
done
