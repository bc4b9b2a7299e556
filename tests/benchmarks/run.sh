#!/usr/bin/env bash
# Run the benchmarks: every tests/benchmarks/bench_*.py, or those named
# (e.g. `tests/benchmarks/run.sh plan`). Each prints a table with the engine's
# figure beside its baseline measured in the same run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python="${CAMPAIGN_VENV:-$root/.venv}/bin/python"
[ -x "$python" ] || { echo "run tests/run.sh once first (it creates .venv)" >&2; exit 1; }
if [ "$#" -eq 0 ]; then
    set -- $(ls tests/benchmarks/bench_*.py | sed -E 's#.*/bench_(.*)\.py#\1#')
fi
for name in "$@"; do
    echo "### bench_$name"
    "$python" -m "tests.benchmarks.bench_$name"
done
