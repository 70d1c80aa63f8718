#!/usr/bin/env bash
# Builds the smtp-tls-proxy container image with podman, from nothing but
# this checkout and the Debian mirror this machine's apt already uses:
#
#   1. a Debian base image made with debootstrap (minbase) and `podman import`,
#      tagged by a content key (suite, mirror, debootstrap version, this
#      script's base recipe) and reused while the key holds;
#   2. `podman build --isolation chroot` of deploy/container/Containerfile on
#      that base (build stage: Bazel, as the project builds; runtime stage:
#      the runtime libraries only);
#   3. a smoke check through `podman image mount` + chroot: the image's binary
#      runs (--version). test/integration/test_container.py checks much more
#      (--check of the shipped configuration, an SMTP session, HEALTHCHECK).
#
#   deploy/container/build.sh [--base-only]
#
# Env: STP_IMAGE (default localhost/smtp-tls-proxy:latest). Prints the base
# image's tag on its last line with --base-only. Run as root on Debian.
set -eu
cd "$(dirname "$0")/../.."
root=$(pwd)
image=${STP_IMAGE:-localhost/smtp-tls-proxy:latest}
base_only=0
case "${1:-}" in
  --base-only) base_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--base-only]" >&2; exit 2 ;;
esac

bash deploy/install-deps.sh --container </dev/null >&2

# The suite this machine runs, and the first mirror its apt sources give for
# that suite (deb822 .sources files or the one-line sources.list format).
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || { echo "build.sh: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }
mirror_of_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() { if (deb && hassuite && uri != "") { print uri; exit 0 } deb = hassuite = 0; uri = "" }
      /^[ \t]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hassuite = 1 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
  done
}
mirror=$(mirror_of_sources | head -n 1)
[ -n "$mirror" ] || { echo "build.sh: no 'deb' source for $suite in /etc/apt/sources*" >&2; exit 1; }

# Base image: debootstrap minbase. Its key covers what decides its content,
# so a changed recipe or mirror builds a new one and an unchanged one is reused.
base_recipe="minbase;no-recommends;no-docs;v3"
key=$(printf '%s\n' "$suite" "$mirror" "$(dpkg-query -W -f='${Version}' debootstrap)" "$base_recipe" |
  sha256sum | cut -c1-16)
base=localhost/smtp-tls-proxy-base:$suite-$key
if podman image exists "$base"; then
  echo "build.sh: base image $base (cached)" >&2
else
  echo "build.sh: debootstrap $suite from $mirror" >&2
  rootfs=$(mktemp -d /var/tmp/stp-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
    { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # Containers install with apt-get: no recommends, no documentation, no
  # translations (now and in every later install), no caches kept.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/90smtp-tls-proxy"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/90smtp-tls-proxy"
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  # (the man directories stay: openjdk's postinst needs /usr/share/man/man1)
  find "$rootfs/usr/share/man" "$rootfs/usr/share/info" -not -type d -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  tar -C "$rootfs" --numeric-owner -c . | podman import --quiet - "$base" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build.sh: base image $base (new)" >&2
fi
if [ "$base_only" = 1 ]; then
  echo "$base"
  exit 0
fi

# HEALTHCHECK is kept only in the docker image format.
podman build --isolation chroot --format docker --pull=never --layers \
  --ignorefile deploy/container/containerignore \
  --build-arg "BASE=$base" -f deploy/container/Containerfile -t "$image" "$root" >&2

# Smoke check: the image's own binary, in the image's own filesystem.
mnt=$(podman image mount "$image")
trap 'podman image unmount "$image" >/dev/null' EXIT
chroot "$mnt" /usr/local/bin/smtp-tls-proxy --version
echo "build.sh: $image built" >&2
