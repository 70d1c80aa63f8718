#!/usr/bin/env bash
# profile.sh: where smtp-tls-proxy spends its CPU under load.
#
#   test/bench/profile.sh [--perf | --callgrind] [--bare | --outbound] [-n SESSIONS] [-k] [-- SMTP-BENCH ARGS]
#
# Runs the proxy (one worker, inbound, STARTTLS, ECDSA P-256) in front of
# Postfix's smtp-sink, drives SESSIONS sessions through it with smtp-bench
# (concurrency 10, one 4 KiB message each unless SMTP-BENCH ARGS say
# otherwise) and prints where the time went:
#
#   --perf       (default; 3000 sessions) `perf record -g` of the proxy
#                during the load: the share of each object (the kernel
#                included) and the top symbols.
#   --callgrind  (300 sessions) the proxy under valgrind's callgrind:
#                instructions per session, counted over the load only (user
#                space only, but exact: a change of a few percent shows,
#                which CPU time on a shared machine never does) and the top
#                functions. The proxy runs about 50 times slower there.
#
# --bare profiles the bare BoringSSL STARTTLS sink (`smtp-bench -L`, the
# same certificate; it relays nothing) in place of the proxy: the floor
# that compare.sh measures, as instructions and shares.
# --outbound profiles the other direction: the proxy (one worker, an
# outbound listener, `tls = encrypt`, route = relay) takes plaintext from
# smtp-bench and originates TLS to a bare sink, resuming its sessions as it
# does in production (compare.sh's ratio 6a).
# -k keeps the data (perf.data, or callgrind.out.*) in the directory printed
# last, for `perf report -i` or `callgrind_annotate`.
# Environment: STP_BIN, STP_BENCH, STP_CERTS as for compare.sh. Only
# processes this script started are stopped, by PID, also on failure.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BIN=${STP_BIN:-$root/bazel-bin/proxy/smtp-tls-proxy}
BENCH=${STP_BENCH:-$root/bazel-bin/test/bench/smtp-bench}
. "$here/lib.sh"

tool=perf
bare=0
outbound=0
n=""
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --perf) tool=perf ;;
    --callgrind) tool=callgrind ;;
    --bare) bare=1 ;;
    --outbound) outbound=1 ;;
    -n) n=$2; shift ;;
    -k) keep=1 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$bare$outbound" = 11 ] && { echo "profile.sh: --bare or --outbound, not both" >&2; exit 2; }
[ -n "$n" ] || n=$([ "$tool" = perf ] && echo 3000 || echo 300)
case "$n" in '' | *[!0-9]* | 0) echo "profile.sh: -n wants a positive number" >&2; exit 2 ;; esac

need=(smtp-sink)
[ "$tool" = perf ] && need+=(perf) || need+=(valgrind callgrind_control callgrind_annotate)
for t in "${need[@]}"; do
    command -v "$t" >/dev/null 2>&1 ||
        { echo "profile.sh: $t missing (deploy/install-deps.sh installs it)" >&2; exit 2; }
done
for t in "$BIN" "$BENCH"; do
    [ -x "$t" ] || { echo "profile.sh: $t missing (bazel build //proxy:smtp-tls-proxy //test/bench:smtp-bench)" >&2; exit 2; }
done

scratch stp-profile

certs=$(test_certs "$tmp/certs") || exit 1
free_port IN
mode=()
if [ "$outbound" = 1 ]; then
    # The next hop: a bare sink, which relays nothing and resumes tickets.
    free_port HOP
    start_bare "$HOP" "$tmp/hop.log" "$certs" || exit 1
    outbound_ini "$tmp/in.ini" 1 "$IN" "$HOP"
    mode=(-M plain) # the legacy MTA's side
else
    start_sink 500 1024 || exit 1
    inbound_ini "$tmp/in.ini" 1 "$IN" "$SINK" "$certs"
fi

if [ "$tool" = callgrind ] && [ "$bare" = 0 ] && grep -qa __asan_init "$BIN"; then
    echo "profile.sh: $BIN is a sanitizer build, which valgrind cannot run; use the normal or -c opt build" >&2
    exit 2
fi
wrap=()
[ "$tool" = callgrind ] &&
    wrap=(valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out.%p" --dump-instr=no)
target=("$BIN" -c "$tmp/in.ini")
[ "$bare" = 1 ] && target=("$BENCH" -L -M starttls -C "$certs/ecdsa.pem" -K "$certs/ecdsa.key" 127.0.0.1 "$IN")
"${wrap[@]}" "${target[@]}" >"$tmp/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
wait_port "$IN" 600 || { tail -5 "$tmp/proxy.log" >&2; exit 1; }

# load N: smtp-bench through the proxy; fails the script on any error.
load() {
    local out
    out=$("$BENCH" -j -c 10 -n "$1" "${mode[@]}" "${@:2}" 127.0.0.1 "$IN" 2>>"$tmp/bench.err") ||
        { echo "profile.sh: smtp-bench failed: $out" >&2; tail -3 "$tmp/bench.err" >&2; exit 1; }
    echo "$out"
}

load 20 "$@" >/dev/null # warm-up: the first handshakes, allocator growth
case "$tool" in
perf)
    perf record -q -g -p "$proxy" -o "$tmp/perf.data" >/dev/null 2>"$tmp/perf.err" &
    rec=$!
    pids+=("$rec")
    sleep 0.5
    out=$(load "$n" "$@") || exit 1 # (the exit in load leaves only the $( ))
    stop "$rec" INT
    [ -s "$tmp/perf.data" ] || { cat "$tmp/perf.err" >&2; exit 1; }
    echo "load: $out"
    echo
    echo "share of the samples by object:"
    perf report -i "$tmp/perf.data" --no-children --sort dso -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -8
    echo
    echo "top symbols:"
    perf report -i "$tmp/perf.data" --no-children --sort dso,sym -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -25
    ;;
callgrind)
    callgrind_control -z "$proxy" >"$tmp/control.log" 2>&1 || { cat "$tmp/control.log" >&2; exit 1; }
    out=$(load "$n" "$@") || exit 1
    callgrind_control -d "$proxy" >"$tmp/control.log" 2>&1 || { cat "$tmp/control.log" >&2; exit 1; }
    dump=$(ls "$tmp"/callgrind.out.*.1 2>/dev/null | head -1)
    [ -n "$dump" ] || { echo "profile.sh: callgrind wrote no dump" >&2; exit 1; }
    sessions=$(sed -E 's/.*"sessions":([0-9]+).*/\1/' <<<"$out")
    ir=$(sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$dump" | head -1)
    echo "load: $out"
    awk -v ir="$ir" -v n="$sessions" 'BEGIN {printf "instructions per session: %.0f (%s over %s sessions)\n", ir / n, ir, n}'
    echo
    # Self cost per function. The threads' entry points were on the stack
    # when counting began, so they show the whole total: they are left out.
    callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null |
        grep -E '^ *[0-9,]+ +\( *[0-9.]+%\)' | grep -vE 'PROGRAM TOTALS|\(100\.0%\)' >"$tmp/self.txt"
    echo "share of the instructions by object:"
    awk -v total="$ir" '{
            v = $1; gsub(",", "", v)
            o = $NF ~ /^\[.*\]$/ ? $NF : "(object not named)"
            sub(/^\[/, "", o); sub(/\]$/, "", o); sub(/.*\//, "", o)
            by[o] += v
        } END { for (o in by) printf "%8.2f%%  %s\n", 100 * by[o] / total, o }' "$tmp/self.txt" |
        sort -rn | head -8
    echo
    echo "top functions (self cost; libcrypto's internal functions have no names):"
    head -25 "$tmp/self.txt"
    ;;
esac
echo
what="the proxy"
[ "$bare" = 1 ] && what="the bare sink"
[ "$outbound" = 1 ] && what="the proxy outbound"
echo "profile.sh: $tool, $what, $n sessions; data in $tmp$([ "$keep" = 1 ] || echo " (removed; -k keeps it)")"
