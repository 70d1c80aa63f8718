#!/usr/bin/env bash
# Demo: installs what is missing, builds, and runs smtp-tls-proxy in the
# foreground (logging to stderr) in front of a demo plaintext mail server
# that stores every message it receives under ./demo/mail/. Ctrl-C stops both.
#
#   deploy/demo.sh
#
# Overrides (used by the integration test of this script):
#   DEMO_DIR (./demo), DEMO_SMTP_PORT (2525), DEMO_SMTPS_PORT (4650),
#   DEMO_BACKEND_PORT (2526), STP_BIN (a prebuilt binary: skips the build)
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
demo=${DEMO_DIR:-$root/demo}
smtp_port=${DEMO_SMTP_PORT:-2525}
smtps_port=${DEMO_SMTPS_PORT:-4650}
backend_port=${DEMO_BACKEND_PORT:-2526}

bash deploy/install-deps.sh
if [ -n "${STP_BIN:-}" ]; then
  bin=$STP_BIN
else
  # Debian's /etc/bazel/bazelrc turns on --sandbox_debug: pages of noise here.
  bazel build --nosandbox_debug //proxy:smtp-tls-proxy
  bin=$root/bazel-bin/proxy/smtp-tls-proxy
fi
py=/usr/bin/python3
[ -x "$py" ] || py=python3

mkdir -p "$demo/mail"
bash test/certs/gen.sh "$demo/certs"

# The "legacy" backend: plaintext only; it records every command it is sent
# in backend-commands.log, so you can see what the proxy let through.
"$py" test/peers/sink.py --listen "127.0.0.1:$backend_port" --maildir "$demo/mail" \
  --transcript "$demo/backend-commands.log" --greeting "legacy.example.test ESMTP demo backend" \
  --ehlo-caps "PIPELINING,SIZE 52428800,8BITMIME,AUTH PLAIN LOGIN,XCLIENT NAME ADDR,ENHANCEDSTATUSCODES" \
  >"$demo/backend.log" 2>&1 &
sink=$!
proxy=""
echo "$sink" >"$demo/backend.pid"
# Stops what this script started, by PID: the proxy first (it finishes its
# sessions), then the backend.
# stop PID: SIGTERM, then up to 10 s for it to go (the proxy drains), then
# SIGKILL. Polls instead of `wait`, which could block here after the job had
# already been reaped in a trap.
stop() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
}
stop_all() {
  trap - EXIT INT TERM
  [ -z "$proxy" ] || stop "$proxy"
  stop "$sink"
  rm -f "$demo/backend.pid"
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
for _ in $(seq 50); do
  grep -q ready "$demo/backend.log" 2>/dev/null && break
  kill -0 "$sink" 2>/dev/null || { cat "$demo/backend.log" >&2; exit 1; }
  sleep 0.1
done

cat >"$demo/demo.ini" <<INI
; smtp-tls-proxy demo configuration (written by deploy/demo.sh)
[proxy]
hostname = mx.example.test

[tls]
cert = $demo/certs/ecdsa.pem
key = $demo/certs/ecdsa.key
cert = $demo/certs/rsa.pem
key = $demo/certs/rsa.key

[listener:smtp]
mode = inbound
listen = 127.0.0.1:$smtp_port
backend = 127.0.0.1:$backend_port
starttls = offer

[listener:smtps]
mode = inbound
listen = 127.0.0.1:$smtps_port
backend = 127.0.0.1:$backend_port
starttls = implicit
INI

cat <<TXT

smtp-tls-proxy demo
  STARTTLS listener      127.0.0.1:$smtp_port    (config: $demo/demo.ini)
  implicit TLS listener  127.0.0.1:$smtps_port
  demo backend           127.0.0.1:$backend_port    plaintext; stores messages in $demo/mail/

Send a message through it from another terminal:
  swaks --server 127.0.0.1:$smtp_port --tls --to you@example.test --from me@example.test
  swaks --server 127.0.0.1:$smtps_port --tlsc --to you@example.test --from me@example.test
Then look at the stored message; its first line is the proxy's Received:
header with the TLS version and cipher:
  ls $demo/mail/ && cat $demo/mail/0001.eml
What the plaintext backend was sent: $demo/backend-commands.log

Proxy log follows (one line per message and per session). Ctrl-C stops the demo.

TXT
# The proxy runs as a child we wait for, so Ctrl-C (or a signal to this
# script alone) reaches the trap at once; the trap stops the proxy with SIGTERM.
"$bin" -c "$demo/demo.ini" &
proxy=$!
wait "$proxy"
