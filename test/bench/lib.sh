# lib.sh: shell helpers shared by compare.sh and profile.sh (sourced).
# The caller keeps the PIDs of what it started in the array `pids`.

# free_port VAR: sets VAR to a loopback port nobody listens on, never one
# this script was given before (the kernel may offer a just-closed port
# again, and compare.sh asks for several in a row before starting anything
# on them). Not $(free_port): a subshell could not remember what it gave.
_given_ports=" "
free_port() {
    local -n _port_var=$1
    local p
    while :; do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        case "$_given_ports" in *" $p "*) continue ;; esac
        _given_ports="$_given_ports$p "
        _port_var=$p
        return 0
    done
}

# wait_port PORT [TENTHS]: until something accepts on 127.0.0.1:PORT (10 s by default).
wait_port() {
    local i
    for i in $(seq "${2:-100}"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "${0##*/}: nothing listens on port $1" >&2
    return 1
}

# stop PID [SIGNAL]: ends one process this script started (SIGTERM, then
# SIGKILL after 10 s) and forgets it.
stop() {
    local p=$1 i rest=()
    kill -"${2:-TERM}" "$p" 2>/dev/null
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    for i in "${pids[@]}"; do [ "$i" = "$p" ] || rest+=("$i"); done
    pids=("${rest[@]}")
}

# scratch PREFIX: a scratch directory in $tmp (/tmp/PREFIX.XXXXXX), and an
# exit trap that stops every process in `pids` and removes it (kept, and
# said so, when the caller's $keep is 1).
scratch() {
    tmp=$(mktemp -d "/tmp/$1.XXXXXX")
    pids=()
    trap scratch_cleanup EXIT
    trap 'exit 130' INT TERM
}

scratch_cleanup() {
    stop_all
    if [ "${keep:-0}" = 1 ]; then echo "${0##*/}: kept $tmp" >&2; else rm -rf "$tmp"; fi
}

# stop_all: every process in `pids`, SIGTERM first, all at once.
stop_all() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    pids=()
}

# test_certs DIR: the test certificates ($STP_CERTS, or made in DIR by
# test/certs/gen.sh); prints their directory.
test_certs() {
    if [ -n "${STP_CERTS:-}" ]; then
        echo "$STP_CERTS"
        return 0
    fi
    bash "$(dirname "${BASH_SOURCE[0]}")/../certs/gen.sh" "$1" >/dev/null 2>&1 ||
        { echo "${0##*/}: test/certs/gen.sh failed" >&2; return 1; }
    echo "$1"
}

# start_sink MAXSESSIONS BACKLOG: Postfix's smtp-sink on a free port (as
# nobody when root), its log in $tmp; sets SINK to the port.
start_sink() {
    local user_opt=()
    [ "$(id -u)" = 0 ] && user_opt=(-u nobody)
    free_port SINK
    smtp-sink "${user_opt[@]}" -m "$1" "127.0.0.1:$SINK" "$2" >"$tmp/smtp-sink.log" 2>&1 &
    pids+=($!)
    wait_port "$SINK"
}

# start_bare PORT LOG CERTS: smtp-bench's bare STARTTLS sink (relays nothing,
# counts resumed handshakes in LOG when stopped) on 127.0.0.1:PORT, with the
# ECDSA certificate; sets BARE_PID once it accepts.
start_bare() {
    "$BENCH" -L -M starttls -C "$3/ecdsa.pem" -K "$3/ecdsa.key" 127.0.0.1 "$1" 2>"$2" &
    BARE_PID=$!
    pids+=("$BARE_PID")
    wait_port "$1"
}

# inbound_ini FILE WORKERS PORT BACKEND_PORT CERTS: a proxy configuration
# with one inbound STARTTLS listener, no connection limits, warnings only.
inbound_ini() {
    cat >"$1" <<EOT
[proxy]
hostname = mx.example.test
workers = $2
log_level = warn
[tls]
cert = $5/ecdsa.pem
key = $5/ecdsa.key
[listener:in]
mode = inbound
listen = 127.0.0.1:$3
backend = 127.0.0.1:$4
max_connections = 0
max_connections_per_ip = 0
EOT
}

# outbound_ini FILE WORKERS PORT NEXTHOP_PORT: a proxy configuration with one
# outbound listener relaying to 127.0.0.1:NEXTHOP_PORT, TLS required (no
# verification: `encrypt`), no connection limits, warnings only.
outbound_ini() {
    cat >"$1" <<EOT
[proxy]
hostname = out.example.test
workers = $2
log_level = warn
[listener:out]
mode = outbound
listen = 127.0.0.1:$3
allow = 127.0.0.1/32
route = relay:127.0.0.1:$4
tls = encrypt
max_connections = 0
max_connections_per_ip = 0
EOT
}
