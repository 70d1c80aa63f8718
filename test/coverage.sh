#!/usr/bin/env bash
# coverage.sh: which lines of the proxy the tests execute (gcov).
#
#   test/coverage.sh [--no-unit] [--no-conformance] [OUTDIR] [-- RUN.PY FILTERS...]
#
# Builds the proxy and the test tools with --coverage (-O0) in their own
# Bazel output base (no bazel-* links are touched), runs the unit tests, the
# integration suite and the conformance suite against that build, and writes
# one annotated FILE.c.gcov per source file into OUTDIR (default
# /tmp/stp-coverage): lines marked ##### were never executed by any test.
# It prints a table, least covered first. A development tool: it is not
# part of test/run.sh or CI (it takes about as long as the integration
# suite), and coverage is a map of where tests are missing, not a target.
#
# Every process writes its counters at exit (GCOV_PREFIX gathers them in
# OUTDIR/data, whatever the process's working directory): a proxy that a
# test kills with SIGKILL, or one that changed to another user, contributes
# nothing, so a few lines read as unexecuted that are.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

unit=1
conformance=1
out=/tmp/stp-coverage
filters=()
while [ $# -gt 0 ]; do
    case "$1" in
    --no-unit) unit=0 ;;
    --no-conformance) conformance=0 ;;
    --) shift; filters=("$@"); break ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "coverage.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1 ;;
    esac
    shift
done
command -v gcov >/dev/null || { echo "coverage.sh: gcov missing (gcc)" >&2; exit 2; }
# OUTDIR is emptied only if it is one this script made (its marker), so a
# mistyped argument never deletes anything else.
if [ -e "$out" ]; then
    [ -f "$out/.stp-coverage" ] || [ -z "$(ls -A "$out" 2>/dev/null)" ] ||
        { echo "coverage.sh: $out exists and is not a coverage.sh output directory" >&2; exit 2; }
    rm -rf "${out:?}/data" "$out"/*.gcov "$out"/*.log
fi
mkdir -p "$out/data" && : >"$out/.stp-coverage" || exit 1

base=${STP_COVERAGE_BASE:-/tmp/stp-coverage-bazel}
# Unsandboxed: the compiler writes each object's notes file (.gcno) beside
# it, which Bazel does not know of and would not copy out of a sandbox.
flags=(--copt=--coverage --copt=-O0 --copt=-fprofile-update=atomic --linkopt=--coverage
    --strip=never --symlink_prefix=/ --spawn_strategy=standalone)
bazel --output_base="$base" build "${flags[@]}" \
    //proxy:smtp-tls-proxy //test/dns:resolve //test/mtasts:fetch >"$base.build.log" 2>&1 ||
    { tail -20 "$base.build.log" >&2; echo "coverage.sh: the coverage build failed" >&2; exit 1; }
bin=$(bazel --output_base="$base" info "${flags[@]}" bazel-bin 2>/dev/null)
execroot=$(bazel --output_base="$base" info "${flags[@]}" execution_root 2>/dev/null)

# The objects were compiled in /proc/self/cwd/bazel-out/...: strip the
# first three parts, so every counter file lands in $out/data/bazel-out/...
export GCOV_PREFIX="$out/data" GCOV_PREFIX_STRIP=3

certs=$(mktemp -d /tmp/stp-coverage-certs.XXXXXX)
trap 'rm -rf "$certs"' EXIT
bash test/certs/gen.sh "$certs" >/dev/null || exit 1

status=0
if [ "$unit" = 1 ]; then
    bazel --output_base="$base" test "${flags[@]}" --test_env=GCOV_PREFIX="$out/data" \
        --test_env=GCOV_PREFIX_STRIP=3 //test/unit/... >"$out/unit.log" 2>&1 || status=1
    tail -3 "$out/unit.log"
fi
env STP_BIN="$bin/proxy/smtp-tls-proxy" STP_CERTS="$certs" STP_RESOLVE="$bin/test/dns/resolve" \
    STP_MTA_STS_FETCH="$bin/test/mtasts/fetch" \
    /usr/bin/python3 test/integration/run.py "${filters[@]}" >"$out/integration.log" 2>&1 || status=1
tail -1 "$out/integration.log"
if [ "$conformance" = 1 ]; then
    env STP_BIN="$bin/proxy/smtp-tls-proxy" STP_CERTS="$certs" \
        /usr/bin/python3 test/conformance/run.py >"$out/conformance.log" 2>&1 || status=1
    tail -1 "$out/conformance.log"
fi

# gcov wants each counter file beside its notes file (.gcno, in the
# execution root) and reads the sources from the workspace.
(cd "$out/data" && find . -name '*.gcda') | while read -r f; do
    cp "$out/data/$f" "$execroot/$f"
done
# The sources were compiled as /proc/self/cwd/...: gcov run in the
# execution root finds them there.
(cd "$out/data" && find . -name '*.gcda') | while read -r f; do
    (cd "$execroot" && gcov -p -o "$(dirname "$f")" "$f" >/dev/null 2>&1)
done
mv "$execroot"/*.gcov "$out"/ 2>/dev/null
cd "$out" || exit 1
# Only the project's own sources (headers of system libraries are left out).
# gcov -p names them by path: proxy#session.c.gcov.
for f in *.gcov; do
    src=$(sed -n '1s/^ *-: *0:Source://p' "$f")
    case "$src" in
    proxy/* | tls/* | policy/*) ;;
    *) rm -f "$f" ;;
    esac
done
printf '%-24s %8s %8s %7s\n' file executed never covered
for f in *.c.gcov; do
    awk -F: -v f="$(sed 's,#,/,g' <<<"${f%.gcov}")" '
        $1 ~ /#####/ { u++ } $1 ~ /^ *[0-9]+\*?$/ { c++ }
        END { if (c + u) printf "%-24s %8d %8d %6.1f%%\n", f, c, u, 100 * c / (c + u) }' "$f"
done | sort -k4 -n
echo "coverage.sh: annotated sources (##### = never executed) in $out"
exit $status
