#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests with real peers, the
# same under ASan+UBSan (with leak checking), and a short fuzz run.
# Ends with one line "N passed, N failed"; exits non-zero on any failure.
#
#   test/run.sh           everything
#   test/run.sh --quick   skip the sanitizer pass and fuzzing
set -u
cd "$(dirname "$0")/.."
root=$(pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1

passed=0
failed=0
work=$(mktemp -d /tmp/stp-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

note() { printf '\n=== %s\n' "$*"; }
count() { # count "<N passed, N failed>" lines from a log
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
    echo "FAIL $2: no result line"
    return
  fi
  passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
  failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
}

# Runs the Bazel unit tests; one result per test target.
unit_tests() {
  local cfg=$1 log="$work/unit$1.log"
  # shellcheck disable=SC2086
  bazel test $cfg //test/unit/... >"$log" 2>&1
  local p f
  p=$(grep -cE '^//test/unit:[a-z_]+ +(\(cached\) )?PASSED' "$log")
  f=$(grep -cE '^//test/unit:[a-z_]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS)' "$log")
  if grep -q "FAILED: Build did NOT complete" "$log"; then
    f=$((f + 1))
    grep -E "error|ERROR" "$log" | head -20
  fi
  grep -E '^//test/unit:' "$log" | sed 's/^/  /'
  echo "$p passed, $f failed"
  passed=$((passed + p))
  failed=$((failed + f))
}

integration() {
  local bin=$1 label=$2 log="$work/it-$2.log"
  STP_BIN="$bin" STP_CERTS="$work/certs" python3 test/integration/run.py 2>&1 | tee "$log" |
    grep -E '^(PASS|FAIL|    )|passed, '
  count "$log" "integration ($label)"
}

note "dependencies"
bash deploy/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
bash test/certs/gen.sh "$work/certs"

note "build"
if ! bazel build //... >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log"
  echo "0 passed, 1 failed"
  exit 1
fi
cp bazel-bin/proxy/smtp-tls-proxy "$work/smtp-tls-proxy"

note "unit tests"
unit_tests ""

note "integration tests"
integration "$work/smtp-tls-proxy" plain

if [ "$quick" = 0 ]; then
  note "ASan+UBSan build"
  if bazel build --config=asan //proxy:smtp-tls-proxy >"$work/build-asan.log" 2>&1; then
    cp bazel-bin/proxy/smtp-tls-proxy "$work/smtp-tls-proxy-asan"
    note "unit tests (ASan+UBSan)"
    unit_tests "--config=asan"
    note "integration tests (ASan+UBSan, leak checking)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:exitcode=23
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    STP_ASAN=1 integration "$work/smtp-tls-proxy-asan" asan
    unset ASAN_OPTIONS UBSAN_OPTIONS
  else
    tail -40 "$work/build-asan.log"
    failed=$((failed + 1))
  fi
  if [ -x test/fuzz/run.sh ] || [ -f test/fuzz/run.sh ]; then
    note "fuzz (short run)"
    bash test/fuzz/run.sh 10 >"$work/fuzz.log" 2>&1
    rc=$?
    grep -E '^(PASS|FAIL)' "$work/fuzz.log"
    if grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$work/fuzz.log"; then
      count "$work/fuzz.log" fuzz
    elif [ $rc = 0 ]; then
      passed=$((passed + 1))
    else
      tail -20 "$work/fuzz.log"
      failed=$((failed + 1))
    fi
  fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
