#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 600) on one core, and prints each
# target's last libFuzzer status line (runs, coverage, features, corpus) and how it ended.
# A crash stops that target; its input is saved under fuzz/artifacts/<target>/.
#
#   bash fuzz/run-all.sh            # 10 minutes a target
#   SECONDS_PER_TARGET=60 bash fuzz/run-all.sh wire blocks
set -u
cd "$(dirname "$0")"
per=${SECONDS_PER_TARGET:-600}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(wire selector_walk blocks extensions sqlite_open)
fi
mkdir -p logs
for t in "${targets[@]}"; do
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"logs/$t.log" 2>&1
    rc=$?
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)
    execs=$(grep -E '^stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}')
    echo "$t: exit $rc, ${execs:-?} execs in ${per}s; last: $last"
done
