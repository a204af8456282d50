#!/bin/sh
# Run one fuzz campaign: fuzz/run.sh TARGET SECONDS   (TARGET: item batch frame connection memshadow)
#
# New inputs go to fuzz/work/corpus/TARGET (gitignored); fuzz/corpus/TARGET (committed) is
# read as seeds. Crashes land in fuzz/crashes/. When the campaign ends, inputs that add
# coverage are merged into fuzz/corpus/TARGET (set MERGE=0 to skip). Extra arguments are
# passed to libFuzzer. PY names the Python with atheris (default .venv/bin/python).
set -eu

if [ $# -lt 1 ]; then
    echo "usage: fuzz/run.sh TARGET [SECONDS] [LIBFUZZER-FLAGS...]" >&2
    exit 2
fi
target=$1
seconds=${2:-60}
[ $# -ge 2 ] && shift 2 || shift 1

case $target in
    item) max_len=16384 ;;
    batch | frame | connection | memshadow) max_len=65536 ;;
    *)
        echo "unknown target '$target' (item, batch, frame, connection, memshadow)" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=fuzz/work/corpus/$target
seeds=fuzz/corpus/$target
mkdir -p "$work" "$seeds" fuzz/crashes

echo "fuzz: $target for ${seconds}s (max_len $max_len) with $PY" >&2
"$PY" fuzz/entry.py "$target" \
    -max_total_time="$seconds" \
    -rss_limit_mb=2048 \
    -timeout=30 \
    -max_len="$max_len" \
    -dict=fuzz/protocol.dict \
    -artifact_prefix="fuzz/crashes/$target-" \
    -print_final_stats=1 \
    "$@" \
    "$work" "$seeds"

if [ "${MERGE:-1}" != 0 ]; then
    echo "fuzz: merging new coverage from $work into $seeds" >&2
    "$PY" fuzz/entry.py "$target" -merge=1 -rss_limit_mb=2048 -timeout=30 \
        -max_len="$max_len" "$seeds" "$work"
fi
