#!/usr/bin/env bash
# compare.sh: smtp-tls-proxy against its peers, in one run, on one backend.
#
# Every peer relays to the same Postfix smtp-sink; test/bench/smtp-bench is
# the client. Measured per peer: the CPU time of the peer's own processes
# (utime+stime from /proc/PID/stat, before and after each load), its memory
# (Rss/Pss from /proc/PID/smaps_rollup) with N idle TLS sessions held after
# EHLO and after RCPT, sessions/s, messages/s, MB/s and session latency
# p50/p90/p99. It prints a table, then each of issue 6's targets as a ratio
# with PASS or FAIL. The benchmark reports; it never fails on a ratio (exit
# status 0 unless a peer could not be run or a load run had errors).
#
# Every peer is started first and the loads then go round-robin: each
# round runs one load on every peer before the next load, and the rounds
# rotate the order of the peers. A ratio is the median over the rounds of
# the ratio within each round, and the table shows medians, so a machine
# whose speed drifts during the run skews no peer against another.
#
#   test/bench/compare.sh [--quick] [--rounds R] [--idle N] [--keep]
#
# Peers: direct plaintext to smtp-sink; nginx's mail proxy (starttls only,
# ECDSA P-256, auth_http answered by nginx itself); stunnel in smtp server
# mode and in client mode; a bare BoringSSL STARTTLS sink that relays nothing
# (smtp-bench -L, the floor); smtp-tls-proxy inbound; smtp-tls-proxy
# outbound (to the bare sink, against stunnel's client mode) and outbound ->
# inbound -> smtp-sink. Both proxies run two workers (nginx
# worker_processes 2, workers = 2); stunnel is one threaded process.
#
# Environment: STP_BIN (proxy binary), STP_BENCH (smtp-bench), STP_CERTS (a
# test/certs/gen.sh directory; made in the scratch directory otherwise).
# Only processes this script started are stopped, by PID, also on failure.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# The optimised build (README: bazel build -c opt --symlink_prefix=bazel-opt-)
# when there is one: a debug build's figures say little.
opt=$root/bazel-opt-bin
[ -x "$opt/proxy/smtp-tls-proxy" ] || opt=$root/bazel-bin
BIN=${STP_BIN:-$opt/proxy/smtp-tls-proxy}
BENCH=${STP_BENCH:-$opt/test/bench/smtp-bench}
case "$BIN" in */bazel-bin/*) echo "compare.sh: measuring $BIN, not an -c opt build" >&2 ;; esac
NGINX_MAIL=/usr/lib/nginx/modules/ngx_mail_module.so
. "$here/lib.sh"

quick=0
keep=0
idle=""
rounds=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    --idle) idle=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    -h | --help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

for tool in "$BIN" "$BENCH"; do
    [ -x "$tool" ] || { echo "compare.sh: $tool missing (bazel build //proxy:smtp-tls-proxy //test/bench:smtp-bench)" >&2; exit 2; }
done
for tool in smtp-sink nginx stunnel4; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        { echo "compare.sh: $tool missing (deploy/install-deps.sh installs it)" >&2; exit 2; }
done

# Descriptors: a proxied session holds two. The hard limit bounds the idle test.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
nofile=$(ulimit -n)
if [ "$quick" = 1 ]; then
    N1=300 N10=60 NBIG=12 NC400=400 NLAT=10 C=50 CBIG=4 CHIGH=100
    idle=${idle:-200}
    rounds=${rounds:-1}
else
    # NBIG: 1 MiB messages enough for each CPU window to span a few hundred
    # clock ticks (with 30 the figures were multiples of one 10 ms tick / 30)
    N1=1500 N10=300 NBIG=150 NC400=2000 NLAT=30 C=50 CBIG=10 CHIGH=400
    idle=${idle:-10000}
    rounds=${rounds:-5}
fi
case "$rounds" in '' | *[!0-9]* | 0) echo "compare.sh: --rounds wants a positive number" >&2; exit 2 ;; esac
max_idle=$(((nofile - 400) / 2))
if [ "$idle" -gt "$max_idle" ]; then
    echo "compare.sh: ulimit -n is $nofile: holding $max_idle idle sessions instead of $idle" >&2
    idle=$max_idle
fi

scratch stp-compare

# The processes that make up a peer: PID and its children (nginx's workers).
tree() {
    local p=$1 c
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done
}

# CPU ticks (utime+stime) of a peer's processes; field 2 may hold spaces.
cpu_ticks() {
    local t=0 p v
    [ -r /proc/"$1"/stat ] || return 1 # gone: not measured (never 0)
    for p in $(tree "$1"); do
        v=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{print $12 + $13}')
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# Rss and Pss in KiB, summed over a peer's processes.
mem_kib() {
    local p
    [ -r /proc/"$1"/smaps_rollup ] || return 1
    for p in $(tree "$1"); do cat /proc/"$p"/smaps_rollup 2>/dev/null; done |
        awk '$1 == "Rss:" {r += $2} $1 == "Pss:" {s += $2} END {printf "%d %d\n", r, s}'
}

HZ=$(getconf CLK_TCK)
results=$tmp/results

# record PEER KEY VALUE: a figure of the current round (0: measured once).
round=0
record() { echo "$1 $2 $3 $round" >>"$results"; }

jnum() { sed -E "s/.*\"$2\":([-0-9.]+).*/\\1/" <<<"$1"; }

failed_runs=0
# load PEER TEST PORT PID ARGS...: one smtp-bench run, the peer's CPU around it.
load() {
    local peer=$1 test=$2 port=$3 pid=$4
    shift 4
    local before after out rc
    before=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    out=$("$BENCH" -j "$@" 127.0.0.1 "$port" 2>>"$tmp/bench.err")
    rc=$?
    after=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    if [ -z "$before" ] || [ -z "$after" ]; then
        echo "compare.sh: $peer $test: the peer (PID $pid) is gone: nothing measured" >&2
        failed_runs=$((failed_runs + 1))
        return
    fi
    if [ $rc -ne 0 ] || [ -z "$out" ]; then
        echo "compare.sh: $peer $test: smtp-bench failed ($rc): $out" >&2
        tail -3 "$tmp/bench.err" >&2
        failed_runs=$((failed_runs + 1))
    fi
    [ -z "$out" ] && return
    # what TLS the peer negotiated (smtp-bench says it from its JSON on)
    local tls
    tls=$(sed -nE 's/.*"tls_version":"([^"]*)".*/\1/p' <<<"$out")
    [ -n "$tls" ] && record "$peer" "$test.tls=$tls" 1
    record "$peer" "$test.resumed" "$(jnum "$out" resumed)"
    local sessions messages
    sessions=$(jnum "$out" sessions)
    messages=$(jnum "$out" messages)
    record "$peer" "$test.sessions_s" "$(jnum "$out" sessions_per_s)"
    record "$peer" "$test.msgs_s" "$(jnum "$out" messages_per_s)"
    record "$peer" "$test.mb_s" "$(jnum "$out" mb_per_s)"
    record "$peer" "$test.p50" "$(jnum "$out" p50_ms)"
    record "$peer" "$test.p90" "$(jnum "$out" p90_ms)"
    record "$peer" "$test.p99" "$(jnum "$out" p99_ms)"
    record "$peer" "$test.errors" "$(jnum "$out" errors)"
    record "$peer" "$test.sessions" "${sessions:-0}"
    if [ "$pid" != - ] && [ "${sessions:-0}" -gt 0 ]; then
        local ms=$(((after - before) * 1000 / HZ))
        record "$peer" "$test.cpu_ms_session" "$(awk -v c="$ms" -v n="$sessions" 'BEGIN {printf "%.4f", c / n}')"
        [ "${messages:-0}" -gt 0 ] &&
            record "$peer" "$test.cpu_ms_msg" "$(awk -v c="$ms" -v n="$messages" 'BEGIN {printf "%.4f", c / n}')"
    fi
}

# hold PEER PORT PID MODE: idle sessions after EHLO, after RCPT, and after they closed.
hold() {
    local peer=$1 port=$2 pid=$3 mode=$4 what flag bpid i base pbase rss pss
    if ! read -r base pbase <<<"$(mem_kib "$pid")" || [ -z "$base" ]; then
        echo "compare.sh: $peer: the peer (PID $pid) is gone: no idle figures" >&2
        failed_runs=$((failed_runs + 1))
        return
    fi
    for what in ehlo rcpt; do
        flag=$([ "$what" = rcpt ] && echo -R)
        : >"$tmp/hold.err"
        "$BENCH" -H $flag -M "$mode" -c "$idle" 127.0.0.1 "$port" >/dev/null 2>"$tmp/hold.err" &
        bpid=$!
        pids+=("$bpid")
        for i in $(seq 3000); do
            grep -q "holding" "$tmp/hold.err" && break
            kill -0 "$bpid" 2>/dev/null || break
            sleep 0.1
        done
        sleep 0.5 # the peer's side of the last sessions settles
        read -r rss pss <<<"$(mem_kib "$pid")"
        local held
        held=$(sed -nE 's/.*holding ([0-9]+) sessions.*/\1/p' "$tmp/hold.err")
        if [ -z "$rss" ]; then
            echo "compare.sh: $peer: the peer (PID $pid) is gone while holding sessions" >&2
            failed_runs=$((failed_runs + 1))
        elif [ -z "$held" ] || [ "$held" -eq 0 ]; then
            echo "compare.sh: $peer: $idle idle sessions were not all established after EHLO${flag:+ and RCPT} within 300 s" >&2
            failed_runs=$((failed_runs + 1))
        else
            record "$peer" "idle_$what.rss_kib" "$(awk -v a="$rss" -v b="$base" -v n="$held" 'BEGIN {printf "%.2f", (a - b) / n}')"
            record "$peer" "idle_$what.pss_kib" "$(awk -v a="$pss" -v b="$pbase" -v n="$held" 'BEGIN {printf "%.2f", (a - b) / n}')"
            record "$peer" "idle.held" "$held"
        fi
        stop "$bpid"
        sleep 2 # the peer closes its side of every session
    done
    read -r rss _ <<<"$(mem_kib "$pid")"
    [ -n "$rss" ] || { failed_runs=$((failed_runs + 1)); return; }
    record "$peer" "idle_after.rss_kib" "$(awk -v a="$rss" -v b="$base" -v n="$idle" 'BEGIN {printf "%.2f", (a - b) / n}')"
}

# The peers, in the order of the first round: NAME PORT PID MODE IDLE
# (PID "-": its CPU is not measured; IDLE 1: idle sessions are held too).
order=()
declare -A P_PORT P_PID P_MODE P_IDLE
peer() {
    order+=("$1")
    P_PORT[$1]=$2 P_PID[$1]=$3 P_MODE[$1]=$4 P_IDLE[$1]=$5
}

# run TEST PEER: one load of the program on one peer.
run() {
    local t=$1 p=$2
    local port=${P_PORT[$p]} pid=${P_PID[$p]} mode=${P_MODE[$p]}
    case "$t" in
    warm) load "$p" warm "$port" - -M "$mode" -c 10 -n 50 ;;
    one) load "$p" one "$port" "$pid" -M "$mode" -c "$C" -n "$N1" ;;
    ten) load "$p" ten "$port" "$pid" -M "$mode" -c "$C" -n "$N10" -m 10 ;;
    big) load "$p" big "$port" "$pid" -M "$mode" -c "$CBIG" -n "$NBIG" -s 1048576 ;;
    resumed) [ "$mode" = plain ] || load "$p" resumed "$port" "$pid" -M "$mode" -c "$C" -n "$N1" -r ;;
    c400) load "$p" c400 "$port" "$pid" -M "$mode" -c "$CHIGH" -n "$NC400" ;;
    lat1) load "$p" lat1 "$port" "$pid" -M "$mode" -c 1 -n "$NLAT" ;;
    esac
}

certs=$(test_certs "$tmp/certs") || exit 1

# The backend: one smtp-sink for every peer.
start_sink $((idle + 500)) 4096 || exit 1

# 1. Direct plaintext to the sink: the throughput ceiling.
peer plain "$SINK" - plain 0

# 2. The bare BoringSSL STARTTLS sink (relays nothing): the floor.
free_port BARE
start_bare "$BARE" "$tmp/bare.log" "$certs" || exit 1
peer bare "$BARE" "$BARE_PID" starttls 1

# 3. nginx's mail proxy, starttls only, auth_http answered by nginx itself.
mkdir -p "$tmp/nginx"
free_port AUTH; free_port NGX
cat >"$tmp/nginx/nginx.conf" <<EOF
load_module $NGINX_MAIL;
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes 2;
worker_rlimit_nofile $nofile;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log error;
events { worker_connections $nofile; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
    uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
    server {
        listen 127.0.0.1:$AUTH;
        location /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $SINK;
            return 204;
        }
    }
}
mail {
    server_name mx.example.test;
    auth_http 127.0.0.1:$AUTH/auth;
    xclient off;
    server {
        listen 127.0.0.1:$NGX backlog=4096;
        protocol smtp;
        smtp_auth none;
        starttls only;
        ssl_protocols TLSv1.3;  # nginx 1.22 leaves TLS 1.3 out by default
        ssl_certificate $certs/ecdsa.pem;
        ssl_certificate_key $certs/ecdsa.key;
    }
}
EOF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/stderr.log" >/dev/null 2>&1 &
ngx_pid=$!
pids+=("$ngx_pid")
wait_port "$NGX" || { cat "$tmp/nginx/stderr.log" >&2; exit 1; }
peer nginx "$NGX" "$ngx_pid" starttls 1

# 4. stunnel, protocol = smtp: server mode in front of smtp-sink, client
# mode in front of the bare sink (the outbound comparison).
free_port STS; free_port STC
cat >"$tmp/stunnel.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = err
output = $tmp/stunnel.log
[smtp-server]
accept = 127.0.0.1:$STS
connect = 127.0.0.1:$SINK
protocol = smtp
cert = $certs/ecdsa.pem
key = $certs/ecdsa.key
[smtp-client]
client = yes
accept = 127.0.0.1:$STC
connect = 127.0.0.1:$BARE
protocol = smtp
EOF
stunnel4 "$tmp/stunnel.conf" >/dev/null 2>&1 &
st_pid=$!
pids+=("$st_pid")
wait_port "$STS" && wait_port "$STC" || exit 1
peer stunnel "$STS" "$st_pid" starttls 1
peer stunnel_client "$STC" "$st_pid" plain 0

# 5. smtp-tls-proxy: inbound to smtp-sink; outbound to a bare sink of its
# own (which counts the resumed handshakes); the same with
# connection_cache_time (another bare sink, counting the handshakes the
# cache saved); and outbound -> inbound -> smtp-sink.
free_port IN; free_port OUT; free_port CHAIN; free_port BARE2; free_port CACHED
free_port BARE3
start_bare "$BARE2" "$tmp/bare2.log" "$certs" || exit 1
bare2_pid=$BARE_PID
start_bare "$BARE3" "$tmp/bare3.log" "$certs" || exit 1
bare3_pid=$BARE_PID
inbound_ini "$tmp/in.ini" 2 "$IN" "$SINK" "$certs"
cat >"$tmp/out.ini" <<EOF
[proxy]
hostname = out.example.test
workers = 2
log_level = warn
[listener:bare]
mode = outbound
listen = 127.0.0.1:$OUT
allow = 127.0.0.1/32
route = relay:127.0.0.1:$BARE2
tls = encrypt
max_connections = 0
max_connections_per_ip = 0
[listener:cached]
mode = outbound
listen = 127.0.0.1:$CACHED
allow = 127.0.0.1/32
route = relay:127.0.0.1:$BARE3
tls = encrypt
connection_cache_time = 2s
max_connections = 0
max_connections_per_ip = 0
[listener:chain]
mode = outbound
listen = 127.0.0.1:$CHAIN
allow = 127.0.0.1/32
route = relay:127.0.0.1:$IN
tls = encrypt
max_connections = 0
max_connections_per_ip = 0
EOF
"$BIN" -c "$tmp/in.ini" >"$tmp/in.log" 2>&1 &
in_pid=$!
pids+=("$in_pid")
"$BIN" -c "$tmp/out.ini" >"$tmp/out.log" 2>&1 &
out_pid=$!
pids+=("$out_pid")
wait_port "$IN" && wait_port "$OUT" && wait_port "$CHAIN" && wait_port "$CACHED" ||
    { cat "$tmp/in.log" "$tmp/out.log" >&2; exit 1; }
peer proxy "$IN" "$in_pid" starttls 1
peer proxy_out "$OUT" "$out_pid" plain 0
peer out_cached "$CACHED" "$out_pid" plain 0
peer chain "$CHAIN" "$out_pid" plain 0

# ---- the loads: round-robin over the peers ----
for p in "${order[@]}"; do run warm "$p"; done
npeers=${#order[@]}
for round in $(seq "$rounds"); do
    echo "compare.sh: round $round of $rounds" >&2
    for t in one ten big resumed c400 lat1; do
        for i in $(seq 0 $((npeers - 1))); do
            run "$t" "${order[$(((i + round - 1) % npeers))]}"
        done
    done
done
round=0
for p in "${order[@]}"; do
    if [ "${P_IDLE[$p]}" = 1 ]; then
        echo "compare.sh: holding idle sessions on $p" >&2
        hold "$p" "${P_PORT[$p]}" "${P_PID[$p]}" "${P_MODE[$p]}"
    fi
done
stop "$bare2_pid"
read -r hs res <<<"$(sed -nE 's/.*sink handshakes ([0-9]+) resumed ([0-9]+).*/\1 \2/p' "$tmp/bare2.log")"
record proxy_out handshakes "${hs:-0}"
record proxy_out resumed "${res:-0}"
stop "$bare3_pid"
read -r hs res <<<"$(sed -nE 's/.*sink handshakes ([0-9]+) resumed ([0-9]+).*/\1 \2/p' "$tmp/bare3.log")"
record out_cached handshakes "${hs:-0}"
record out_cached sessions "$(awk '$1 == "out_cached" && $2 ~ /[.]sessions$/ {n += $3} END {print n + 0}' "$results")"

# ---- report ----
# Figures are medians over the rounds; a ratio is the median of the
# ratios within each round (its per-round values follow it).
awk -v quick="$quick" -v idle="$idle" -v failed="$failed_runs" '
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) {
        t = a[i] + 0
        for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
    }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function v(peer, key) { return ((peer SUBSEP key) in all) ? median(all[peer, key]) : "" }
function f(x, fmt) { return x == "" ? "-" : sprintf(fmt, x) }
# verdict LABEL X LIMIT OP EXTRA: X against LIMIT (OP "<=" or ">=").
function verdict(label, x, limit, op, extra,    ok) {
    if (x == "") {
        printf "ratio %-58s      n/a  (%s %.2f)  FAIL (not measured)\n", label, op, limit
        return
    }
    ok = (op == "<=") ? x <= limit : x >= limit
    printf "ratio %-58s %8.3f  (%s %.2f)  %s%s\n", label, x, op, limit, ok ? "PASS" : "FAIL", extra
}
# ratio LABEL A B LIMIT OP: two figures measured once.
function ratio(label, a, b, limit, op) {
    verdict(label, (a == "" || b == "" || b + 0 == 0) ? "" : a / b, limit, op, "")
}
# rratio LABEL PA KA PB KB LIMIT OP: PA KA over PB KB, round by round.
function rratio(label, pa, ka, pb, kb, limit, op,    r, list, shown, a, b) {
    list = ""; shown = ""
    for (r = 1; r <= rounds; r++) {
        if (!((pa SUBSEP ka SUBSEP r) in byround) || !((pb SUBSEP kb SUBSEP r) in byround)) continue
        a = byround[pa, ka, r]; b = byround[pb, kb, r]
        if (b + 0 == 0) continue
        list = list " " a / b
        shown = shown sprintf(" %.3f", a / b)
    }
    verdict(label, median(list), limit, op, rounds > 1 && shown != "" ? "  rounds:" shown : "")
}
# rmedian PA KA PB KB: the median of PA KA / PB KB over the rounds.
function rmedian(pa, ka, pb, kb,    r, list) {
    list = ""
    for (r = 1; r <= rounds; r++) {
        if (!((pa SUBSEP ka SUBSEP r) in byround) || !((pb SUBSEP kb SUBSEP r) in byround)) continue
        if (byround[pb, kb, r] + 0 == 0) continue
        list = list " " byround[pa, ka, r] / byround[pb, kb, r]
    }
    return median(list)
}
{
    all[$1, $2] = all[$1, $2] " " $3
    if ($4 > 0) byround[$1, $2, $4] = $3
    if ($4 > rounds) rounds = $4
}
END {
    n = split("plain bare nginx stunnel proxy stunnel_client proxy_out out_cached chain", peers, " ")
    printf "%-15s %9s %9s %9s %9s %9s %8s %8s %8s %9s %8s %8s %9s %9s %9s\n", "peer", "cpu/sess", "cpu/msg10", "cpu/1MiB",
        "cpu/resum", "sess/s", "msg/s10", "MB/s1MiB", "p50ms", "p90/p99", "p50ms", "s/s@c400", "idle-ehlo", "idle-rcpt", "after"
    printf "%-15s %9s %9s %9s %9s %9s %8s %8s %8s %9s %8s %8s %9s %9s %9s\n", "", "ms", "ms", "ms", "ms", "", "", "", "c=50",
        "ms", "c=1", "", "KiB/sess", "KiB/sess", "KiB/sess"
    for (i = 1; i <= n; i++) {
        p = peers[i]
        printf "%-15s %9s %9s %9s %9s %9s %8s %8s %8s %9s %8s %8s %9s %9s %9s\n", p,
            f(v(p, "one.cpu_ms_session"), "%.3f"), f(v(p, "ten.cpu_ms_msg"), "%.3f"),
            f(v(p, "big.cpu_ms_msg"), "%.2f"), f(v(p, "resumed.cpu_ms_session"), "%.3f"),
            f(v(p, "one.sessions_s"), "%.0f"), f(v(p, "ten.msgs_s"), "%.0f"), f(v(p, "big.mb_s"), "%.1f"),
            f(v(p, "one.p50"), "%.1f"), f(v(p, "one.p90"), "%.0f") "/" f(v(p, "one.p99"), "%.0f"),
            f(v(p, "lat1.p50"), "%.1f"), f(v(p, "c400.sessions_s"), "%.0f"),
            f(v(p, "idle_ehlo.rss_kib"), "%.1f") , f(v(p, "idle_rcpt.rss_kib"), "%.1f"),
            f(v(p, "idle_after.rss_kib"), "%.1f")
    }
    printf "(PSS per idle session after RCPT: nginx %s, stunnel %s, bare %s, proxy %s KiB; %s sessions held)\n",
        f(v("nginx", "idle_rcpt.pss_kib"), "%.1f"), f(v("stunnel", "idle_rcpt.pss_kib"), "%.1f"),
        f(v("bare", "idle_rcpt.pss_kib"), "%.1f"), f(v("proxy", "idle_rcpt.pss_kib"), "%.1f"), v("proxy", "idle.held")
    printf "(each figure the median of %d rounds)\n", rounds
    print ""
    rratio("1a cpu/session proxy / nginx", "proxy", "one.cpu_ms_session", "nginx", "one.cpu_ms_session", 0.5, "<=")
    rratio("1b cpu/session proxy / bare sink", "proxy", "one.cpu_ms_session", "bare", "one.cpu_ms_session", 1.4, "<=")
    rratio("2a cpu/msg (10 per session) proxy / nginx", "proxy", "ten.cpu_ms_msg", "nginx", "ten.cpu_ms_msg", 0.5, "<=")
    rratio("2b msgs/s (10 per session) proxy / plaintext", "proxy", "ten.msgs_s", "plain", "ten.msgs_s", 0.85, ">=")
    rratio("3a cpu/msg (1 MiB) proxy / nginx", "proxy", "big.cpu_ms_msg", "nginx", "big.cpu_ms_msg", 0.5, "<=")
    rratio("3b MB/s (1 MiB) proxy / plaintext", "proxy", "big.mb_s", "plain", "big.mb_s", 0.8, ">=")
    ratio("4a idle RSS/session after RCPT proxy / 12 KiB", v("proxy", "idle_rcpt.rss_kib"), 12, 1, "<=")
    ratio("4b idle RSS/session after RCPT proxy / nginx", v("proxy", "idle_rcpt.rss_kib"), v("nginx", "idle_rcpt.rss_kib"), 0.5, "<=")
    ratio("4c RSS/session left after close / 1 KiB", v("proxy", "idle_after.rss_kib") < 0 ? 0 : v("proxy", "idle_after.rss_kib"), 1, 1, "<=")
    rratio("5a sessions/s at c=" v("c", "high") " proxy / nginx", "proxy", "c400.sessions_s", "nginx", "c400.sessions_s", 2, ">=")
    rratio("5b latency p50 at c=50 proxy / nginx", "proxy", "one.p50", "nginx", "one.p50", 0.25, "<=")
    rratio("6a cpu/originated session outbound / stunnel client", "proxy_out", "one.cpu_ms_session", "stunnel_client", "one.cpu_ms_session", 0.2, "<=")
    rratio("6b cpu/session resumed / full (inbound)", "proxy", "resumed.cpu_ms_session", "proxy", "one.cpu_ms_session", 0.6, "<=")
    printf "(outbound: %s of %s handshakes with the next hop were resumed)\n", v("proxy_out", "resumed"), v("proxy_out", "handshakes")
    printf "(outbound with connection_cache_time = 2s: %s TLS handshakes with the next hop for %s sessions; cpu/session %s x proxy_out, %s x stunnel client)\n",
        v("out_cached", "handshakes"), v("out_cached", "sessions"),
        f(rmedian("out_cached", "one.cpu_ms_session", "proxy_out", "one.cpu_ms_session"), "%.3f"),
        f(rmedian("out_cached", "one.cpu_ms_session", "stunnel_client", "one.cpu_ms_session"), "%.3f")
    printf "(latency p50 at concurrency 1, where no peer is short of CPU: proxy %s, nginx %s, bare sink %s ms)\n",
        f(v("proxy", "lat1.p50"), "%.1f"), f(v("nginx", "lat1.p50"), "%.1f"), f(v("bare", "lat1.p50"), "%.1f")
    # what each TLS peer negotiated (every one should say TLSv1.3) and how
    # many of its "resumed" sessions were resumed
    line = ""
    for (i = 1; i <= n; i++) {
        p = peers[i]; t = ""
        for (k in all) {
            split(k, kk, SUBSEP)
            if (kk[1] == p && kk[2] ~ /^one[.]tls=/) t = t (t == "" ? "" : ",") substr(kk[2], 9)
        }
        if (t != "") line = line sprintf(" %s %s", p, t)
    }
    if (line != "") printf "(TLS negotiated:%s)\n", line
    printf "(resumed sessions in the resumed load: proxy %s, nginx %s, bare %s, stunnel %s of %s each)\n",
        f(v("proxy", "resumed.resumed"), "%d"), f(v("nginx", "resumed.resumed"), "%d"),
        f(v("bare", "resumed.resumed"), "%d"), f(v("stunnel", "resumed.resumed"), "%d"),
        f(v("proxy", "resumed.sessions"), "%d")
    if (failed > 0) printf "WARNING: %d load runs failed or lost their peer: the figures above are incomplete\n", failed
    if (quick) print "(--quick: counts too small for the ratios to mean anything; the shape is what is checked)"
}' <(echo "c high $CHIGH 0"; cat "$results")

[ "$failed_runs" -eq 0 ] || { echo "compare.sh: $failed_runs load runs failed" >&2; exit 1; }
exit 0
