#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for SECONDS each (default 60), on
# stable Rust: libFuzzer with coverage, debug assertions and overflow checks,
# no sanitizer (those need nightly; the crate forbids unsafe code anyway).
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Prints one line per target (runs, coverage, corpus, crashes) and exits 1
# when any target crashed; the crashing input is in fuzz/artifacts/<target>/
# (replay it with fuzz/target/<triple>/release/<target> <file>). The corpus
# grows in fuzz/target/corpus/<target>/, seeded from fuzz/corpus/<target>/.
# CARGO_LOCK=/tmp/cargo.lock wraps the build (only) in flock on that file.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true

build=(cargo fuzz build -s none)
if [ -n "${CARGO_LOCK:-}" ]; then build=(flock "$CARGO_LOCK" "${build[@]}"); fi
"${build[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then mapfile -t targets < <(cargo fuzz list); fi
bin=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
failed=0
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || { echo "unknown target: $t" >&2; exit 2; }
  mkdir -p "fuzz/corpus/$t" "fuzz/target/corpus/$t" "fuzz/artifacts/$t" fuzz/target/logs
  log=fuzz/target/logs/$t.log
  status=0
  # The first corpus directory takes what is found; the seeds stay as committed.
  "$bin/$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ "$status" -eq 0 ]; then
    printf '%-12s ok     runs=%s cov=%s corpus=%s crashes=0\n' "$t" "${runs:-0}" "${cov:-?}" "${corp:-?}"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    printf '%-12s CRASH  runs=%s cov=%s corpus=%s crashes=1 input=%s (exit %s, log %s)\n' \
      "$t" "${runs:-0}" "${cov:-?}" "${corp:-?}" "${artifact:-?}" "$status" "$log"
    grep -m3 -E 'panicked at|^==[0-9]+== ERROR|deadly signal|timeout after' "$log" | sed 's/^/    /' || true
  fi
done
exit "$failed"
