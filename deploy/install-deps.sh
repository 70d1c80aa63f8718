#!/usr/bin/env bash
# Installs the Debian packages smtp-tls-proxy needs to build, run and test.
# Idempotent: when every package is already installed it returns at once
# without touching apt. Run as root (or through sudo) on Debian bookworm.
#
#   deploy/install-deps.sh            build + run + test dependencies
#   deploy/install-deps.sh --runtime  only what the binary needs at run time
#   deploy/install-deps.sh --container  what deploy/container/build.sh needs
set -eu

build_pkgs="bazel-bootstrap android-libboringssl-dev libuv1-dev libinih-dev libc-ares-dev libidn2-dev
  gcc g++ clang libclang-rt-14-dev"
runtime_pkgs="android-libboringssl libuv1 libinih1 libc-ares2 libidn2-0"
container_pkgs="podman debootstrap util-linux"
test_pkgs="swaks libnet-ssleay-perl postfix openssl curl python3 ca-certificates iproute2 procps nftables
  nginx-light libnginx-mod-mail haproxy stunnel4 testssl.sh systemd python3-yaml nsd unbound ldnsutils
  valgrind linux-perf gdb libc6-dbg strace"

case "${1:-}" in
  --runtime) want="$runtime_pkgs" ;;
  --container) want="$container_pkgs" ;;
  "") want="$build_pkgs $runtime_pkgs $test_pkgs $container_pkgs" ;;
  *) echo "usage: $0 [--runtime|--container]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
  echo "install-deps: need root to install:$missing" >&2
  exit 1
fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix is a test peer only (smtp-sink, smtp-source, a private instance);
# never let its package configure or start a system mail server.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Test peers (nginx, postfix, nsd, unbound) are started by the tests themselves: keep their
# packages from starting system services (Debian's policy-rc.d mechanism).
cleanup=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  cleanup=/usr/sbin/policy-rc.d
fi
trap '[ -n "$cleanup" ] && rm -f "$cleanup"' EXIT
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
