#!/usr/bin/env bash
# The whole test suite, non-interactively (CI=true, no stdin is fine):
#
#   1. deploy/install-deps.sh (fast when everything is installed)
#   2. bazel build //...
#   2b. bazel build -c opt //... (the optimised build: -O2's extra warnings)
#   3. unit tests: bazel test //test/unit/...          (one result per target)
#   4. integration tests against the normal binary      (one result per test)
#   4b. the security conformance suite (test/conformance/run.py: attacks,
#      faults, testssl.sh), one result per named case, its table printed
#   4c. the container image (test_container.py: deploy/container/build.sh,
#      then checks through podman image mount + chroot); STP_TEST_CONTAINER=0
#      skips it
#   5. the proxy and unit tests rebuilt under ASan+UBSan; unit tests and the
#      integration suite again, with leak checking at each proxy's SIGTERM
#   6. test/fuzz/run.sh 10, if present                  (one result per target)
#
# Ends with exactly one line "N passed, N failed" (the sum of every stage);
# exits non-zero on any failure.
#
#   test/run.sh            everything
#   test/run.sh --quick    skip the sanitizer pass and fuzzing
#
# The ASan build uses `-c dbg` so its outputs live in their own tree
# (bazel-out/k8-dbg) and `--symlink_prefix=/` so bazel-bin keeps pointing at
# the normal build: other people's bazel-bin/proxy/smtp-tls-proxy is never
# swapped for a sanitizer build behind their back. The normal binary is also
# copied aside before anything else is built.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
done

py=/usr/bin/python3
[ -x "$py" ] || py=python3
passed=0
failed=0
summary=""
work=$(mktemp -d /tmp/stp-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

note() { printf '\n=== %s\n' "$*"; }

# add LABEL PASSED FAILED: adds a stage's results to the totals.
add() {
  passed=$((passed + $2))
  failed=$((failed + $3))
  summary="$summary$(printf '  %-34s %4d passed, %d failed' "$1" "$2" "$3")"$'\n'
}

# add_from_log LABEL LOG: takes the last "N passed, N failed" line of LOG;
# a stage that printed none (crashed, timed out) counts as one failure.
add_from_log() {
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$2" | tail -n 1)
  if [ -z "$line" ]; then
    echo "FAIL $1: no result line; last output:"
    tail -n 20 "$2" | sed 's/^/    /'
    add "$1" 0 1
    return
  fi
  add "$1" "$(echo "$line" | cut -d' ' -f1)" "$(echo "$line" | cut -d' ' -f3)"
}

# finish: prints the per-stage summary and the one final line.
finish() {
  echo
  echo "=== summary"
  printf '%s' "$summary"
  echo
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}

# unit_tests LABEL BAZEL-FLAGS...: one result per //test/unit target.
unit_tests() {
  local label=$1 log="$work/$1.log"
  shift
  timeout 1800 bazel test "$@" //test/unit/... >"$log" 2>&1
  local p f
  p=$(grep -cE '^//test/unit:[A-Za-z0-9_]+ +(\(cached\) )?PASSED' "$log")
  f=$(grep -E '^//test/unit:[A-Za-z0-9_]+ ' "$log" | grep -cv 'PASSED')
  grep -E '^//test/unit:' "$log" | sed 's/^/  /'
  if [ "$p" = 0 ] && [ "$f" = 0 ]; then
    echo "FAIL $label: no test ran; last output:"
    tail -n 30 "$log" | sed 's/^/    /'
    f=1
  elif grep -q "Build did NOT complete" "$log"; then
    grep -E '^(ERROR|.*error:)' "$log" | head -20 | sed 's/^/    /'
    [ "$f" = 0 ] && f=1
  fi
  echo "$p passed, $f failed"
  add "$label" "$p" "$f"
}

# integration LABEL BINARY [ENV...]: the integration suite against BINARY.
integration() {
  local label=$1 bin=$2 log="$work/$1.log"
  shift 2
  env STP_BIN="$bin" STP_CERTS="$work/certs" "$@" \
    timeout 1800 "$py" test/integration/run.py >"$log" 2>&1
  grep -E '^(PASS|FAIL|    )|^[0-9]+ passed, [0-9]+ failed$' "$log"
  add_from_log "$label" "$log"
}

note "dependencies"
if ! bash deploy/install-deps.sh </dev/null; then
  add "dependencies" 0 1
  finish
fi
bash test/certs/gen.sh "$work/certs"

note "build"
# Convenience symlinks that belong to another checkout (e.g. committed ones in
# a fresh clone) would make //... descend into that checkout's output tree.
own_base=$(bazel info output_base 2>/dev/null)
for link in bazel-*; do
  [ -L "$link" ] && [ -n "$own_base" ] || continue
  case "$(readlink "$link")" in
    "$own_base"/*) ;;
    *) echo "removing stale symlink $link -> $(readlink "$link")"; rm -f "$link" ;;
  esac
done
if ! timeout 1800 bazel build //... >"$work/build.log" 2>&1; then
  grep -E 'ERROR|error:' "$work/build.log" | head -30
  tail -n 20 "$work/build.log"
  add "build" 0 1
  finish
fi
echo "ok"
cp bazel-bin/proxy/smtp-tls-proxy "$work/smtp-tls-proxy"
cp bazel-bin/test/mtasts/fetch "$work/mta-sts-fetch"
cp bazel-bin/test/dns/resolve "$work/resolve"
cp bazel-bin/test/fault/libssl_write_fault.so "$work/libssl_write_fault.so"

note "optimised build (-c opt, as deploy/ and the container image build it)"
# -O2 enables warnings (-Wformat-truncation, -Wmaybe-uninitialized) that the
# default build does not see; -Werror makes them build failures there.
if timeout 1800 bazel build -c opt --symlink_prefix=/ //... >"$work/build-opt.log" 2>&1; then
  echo "ok"
  add "optimised build" 1 0
else
  grep -E 'ERROR|error:' "$work/build-opt.log" | head -30
  add "optimised build" 0 1
fi

note "unit tests"
unit_tests "unit"

note "integration tests"
integration "integration" "$work/smtp-tls-proxy" STP_MTA_STS_FETCH="$work/mta-sts-fetch" \
  STP_RESOLVE="$work/resolve" STP_FAULT_LIB="$work/libssl_write_fault.so"

note "security conformance (test/conformance/run.py)"
STP_BIN="$work/smtp-tls-proxy" STP_CERTS="$work/certs" \
  timeout 1200 "$py" test/conformance/run.py -v >"$work/conformance.log" 2>&1
grep -Ev '^[0-9]+ passed, [0-9]+ failed$' "$work/conformance.log"
add_from_log "conformance" "$work/conformance.log"

if [ "${STP_TEST_CONTAINER:-1}" != 0 ]; then
  note "container image (test_container.py; ~3.5 min the first time, ~10 s when cached)"
  # A tag of this checkout's own, so checkouts testing side by side do not
  # overwrite each other's image.
  tag=localhost/smtp-tls-proxy:test-$(printf '%s' "$root" | sha256sum | cut -c1-12)
  STP_TEST_CONTAINER=1 STP_IMAGE="$tag" STP_CERTS="$work/certs" \
    timeout 1800 "$py" test/integration/run.py test_container >"$work/container.log" 2>&1
  grep -E '^(PASS|FAIL|    )|^[0-9]+ passed, [0-9]+ failed$' "$work/container.log"
  add_from_log "container image" "$work/container.log"
fi

if [ "$quick" = 0 ]; then
  asan=(--config=asan -c dbg --symlink_prefix=/)
  note "ASan+UBSan build"
  if timeout 1800 bazel build "${asan[@]}" //proxy:smtp-tls-proxy //test/mtasts:fetch \
      //test/dns:resolve \
      >"$work/build-asan.log" 2>&1; then
    echo "ok"
    asan_bin=$(bazel info "${asan[@]}" bazel-bin 2>/dev/null)
    cp "$asan_bin/proxy/smtp-tls-proxy" "$work/smtp-tls-proxy-asan"
    cp "$asan_bin/test/mtasts/fetch" "$work/mta-sts-fetch-asan"
    cp "$asan_bin/test/dns/resolve" "$work/resolve-asan"

    note "unit tests (ASan+UBSan)"
    unit_tests "unit (ASan+UBSan)" "${asan[@]}"

    note "integration tests (ASan+UBSan, leak check at every SIGTERM)"
    integration "integration (ASan+UBSan)" "$work/smtp-tls-proxy-asan" STP_ASAN=1 \
      STP_MTA_STS_FETCH="$work/mta-sts-fetch-asan" \
      STP_RESOLVE="$work/resolve-asan" \
      STP_FAULT_LIB="$work/libssl_write_fault.so" \
      ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=23:strict_string_checks=1 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  else
    grep -E 'ERROR|error:' "$work/build-asan.log" | head -30
    add "ASan+UBSan build" 0 1
  fi

  if [ -f test/fuzz/run.sh ]; then
    note "fuzzing (10 s per target)"
    STP_FUZZ_OUT="$work/fuzz" timeout 1800 bash test/fuzz/run.sh 10 >"$work/fuzz.log" 2>&1
    grep -E '^(PASS|FAIL|    )|^[0-9]+ passed, [0-9]+ failed$' "$work/fuzz.log"
    add_from_log "fuzz" "$work/fuzz.log"
  fi
fi

finish
