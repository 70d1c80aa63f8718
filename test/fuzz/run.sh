#!/usr/bin/env bash
# Builds every libFuzzer target with clang (ASan+UBSan) and runs each on its
# seed corpus for SECONDS (default 10). Prints PASS/FAIL per target and
# "N passed, N failed"; a crash leaves its reproducer in the output dir.
#   test/fuzz/run.sh [SECONDS]
set -u
cd "$(dirname "$0")/../.."
secs=${1:-10}
out=${STP_FUZZ_OUT:-/tmp/stp-fuzz}
mkdir -p "$out"
cc=${CC_FUZZ:-clang}
flags="-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. -I/usr/include/android"

declare -A srcs=(
  [fuzz_smtp_line]="proxy/smtp_line.c"
  [fuzz_smtp_cmd]="proxy/smtp_cmd.c"
  [fuzz_smtp_reply]="proxy/smtp_reply.c"
  [fuzz_ehlo]="proxy/ehlo.c proxy/smtp_reply.c"
  [fuzz_data_scan]="proxy/data_scan.c"
  [fuzz_config]="proxy/config.c policy/cidr.c -linih"
)
passed=0
failed=0
for t in $(printf '%s\n' "${!srcs[@]}" | sort); do
  [ -f "test/fuzz/$t.c" ] || continue
  # shellcheck disable=SC2086
  if ! $cc $flags -o "$out/$t" "test/fuzz/$t.c" ${srcs[$t]} 2>"$out/$t.build.log"; then
    echo "FAIL $t: build"; sed 's/^/    /' "$out/$t.build.log" | head -20
    failed=$((failed + 1)); continue
  fi
  work="$out/$t.corpus"
  rm -rf "$work" && mkdir -p "$work"
  cp test/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
  # run from an empty directory: crash files land there, nothing in the tree
  if (cd "$out" && "./$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$out/$t-" "$work" >"$out/$t.log" 2>&1); then
    echo "PASS $t ($(grep -o 'stat::number_of_executed_runs: *[0-9]*' "$out/$t.log" |
      grep -o '[0-9]*$' || grep -Eo '#[0-9]+' "$out/$t.log" | tail -1) runs in ${secs}s)"
    passed=$((passed + 1))
  else
    echo "FAIL $t: see $out/$t.log"; grep -E "ERROR|SUMMARY|Test unit written" "$out/$t.log" | head -5
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
