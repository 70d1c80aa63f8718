# lib.sh: shell helpers shared by compare.sh and profile.sh (sourced).
# The caller keeps the PIDs of what it started in the array `pids`.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
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
