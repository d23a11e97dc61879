#!/usr/bin/env bash
# Mutation testing with cosmic-ray (pip install cosmic-ray), one module at a
# time, each with the tests that pin its behaviour. Not part of CI: it takes
# minutes to hours per module. Run from the repository root:
#   bash benchmarks/mutation/run.sh [key_frames boxes vid_eval ...]
# Writes benchmarks/mutation/<module>.txt (cr-report) and prints the totals.
# cosmic-ray mutates the module in place: after interrupting a run,
# `git checkout -- <module>` restores it.
#
# Parallel: MUTATION_WORKERS="/path/clone1 /path/clone2" runs one cosmic-ray
# http-worker in each of those clones (each an installed, natively built
# checkout of this commit with its own .venv; mutants are applied there, so
# this checkout is never touched) and hands them the jobs, with one torch
# thread each (VIDTRT_TEST_THREADS=1).
#
# Mutants that only change a type annotation are skipped as equivalent
# (filter_annotations.py). The pipeline configs reuse bundles exported once
# per invocation (VIDTRT_TEST_EXPORT_CACHE, cleared here).
set -euo pipefail
cd "$(dirname "$0")/../.."
modules=("${@:-key_frames boxes vid_eval}")
workers=(${MUTATION_WORKERS:-})
pids=()
rm -rf /tmp/vidtrt-mutation-exports
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
urls=()
port=9876
for clone in "${workers[@]}"; do
  (cd "$clone" && VIDTRT_TEST_THREADS=1 OMP_NUM_THREADS=1 exec .venv/bin/cosmic-ray http-worker --port "$port") > "$(mktemp)" 2>&1 &
  pids+=($!)
  urls+=("\"http://localhost:$port\"")
  port=$((port + 1))
done
for name in ${modules[@]}; do
  config="benchmarks/mutation/$name.toml"
  if [ ${#workers[@]} -gt 0 ]; then
    parallel_config="$(mktemp --suffix=.toml)"
    sed '/^\[cosmic-ray.distributor\]/,/^name = /d' "$config" > "$parallel_config"
    printf '\n[cosmic-ray.distributor]\nname = "http"\n\n[cosmic-ray.distributor.http]\nworker-urls = [%s]\n' \
      "$(IFS=,; echo "${urls[*]}")" >> "$parallel_config"
    config="$parallel_config"
  fi
  session="$(mktemp -d)/$name.sqlite"
  echo "$name: session $session"
  .venv/bin/cosmic-ray init "$config" "$session"
  .venv/bin/cr-filter-operators "$session" "$config"
  .venv/bin/python benchmarks/mutation/filter_annotations.py "$session"
  [ ${#workers[@]} -gt 0 ] || .venv/bin/cosmic-ray baseline "$config"
  .venv/bin/cosmic-ray exec "$config" "$session"
  .venv/bin/cr-report "$session" > "benchmarks/mutation/$name.txt"
  # module-path is one quoted path or a list of them.
  for module in $(grep -oP '^module-path = \K.*' "benchmarks/mutation/$name.toml" | grep -oP '"[^"]+"' | tr -d '"'); do
    git diff --quiet -- "$module" || echo "warning: $module differs from git after the run (a mutant left behind?)" >&2
    for clone in "${workers[@]}"; do
      git -C "$clone" diff --quiet -- "$module" || echo "warning: $module differs in $clone after the run" >&2
    done
  done
  tail -3 "benchmarks/mutation/$name.txt"
done
