#!/usr/bin/env bash
# Demo: installs what is missing, builds, and runs smtp-tls-proxy in the
# foreground in front of a demo plaintext mail server that stores every
# message it receives under ./demo/mail/. Ctrl-C stops both.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
demo="$root/demo"

bash deploy/install-deps.sh
bazel build //proxy:smtp-tls-proxy
mkdir -p "$demo/mail"
bash test/certs/gen.sh "$demo/certs" >/dev/null

python3 test/peers/sink.py --listen 127.0.0.1:2526 --maildir "$demo/mail" \
  --transcript "$demo/backend-commands.log" --greeting "legacy.example.test ESMTP demo backend" \
  --ehlo-caps "PIPELINING,SIZE 52428800,8BITMIME,AUTH PLAIN LOGIN,ENHANCEDSTATUSCODES" \
  >"$demo/backend.log" 2>&1 &
sink=$!
trap 'kill "$sink" 2>/dev/null; wait "$sink" 2>/dev/null' EXIT INT TERM

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
listen = 127.0.0.1:2525
backend = 127.0.0.1:2526
starttls = offer

[listener:smtps]
mode = inbound
listen = 127.0.0.1:4650
backend = 127.0.0.1:2526
starttls = implicit
INI

cat <<TXT

smtp-tls-proxy demo
  STARTTLS listener  127.0.0.1:2525   implicit TLS listener  127.0.0.1:4650
  demo backend       127.0.0.1:2526 (plaintext), stores messages in $demo/mail/

Send a message through it from another terminal:
  swaks --server 127.0.0.1:2525 --tls --to you@example.test --from me@example.test
  swaks --server 127.0.0.1:4650 --tlsc --to you@example.test --from me@example.test
Then look at the stored message and its Received: header (TLS version and cipher):
  ls $demo/mail/ && cat $demo/mail/0001.eml

Proxy log follows (one line per message and per session). Ctrl-C stops the demo.

TXT
bazel-bin/proxy/smtp-tls-proxy -c "$demo/demo.ini"
