#!/usr/bin/env bash
# Builds every libFuzzer target with clang (libFuzzer + ASan + UBSan) straight
# from the sources and runs each for SECONDS (default 10) on a copy of its
# seed corpus (test/fuzz/corpus/<target>/), with test/fuzz/smtp.dict.
# Prints PASS/FAIL per target and "N passed, N failed"; exits non-zero if a
# target fails to build or finds a crash, leak, sanitizer error or broken
# invariant. A crash leaves its reproducer in the output directory:
#   $OUT/<target>-crash-<sha1>; replay with  $OUT/<target> <file>
#
#   test/fuzz/run.sh [SECONDS]
#
# Environment: STP_FUZZ_OUT (default /tmp/stp-fuzz) for binaries, logs and
# working corpora (nothing is written to the tree); CC_FUZZ (default
# /usr/bin/clang, else clang from PATH).
#
# This script does not use Bazel, so it never takes the Bazel lock or
# switches the shared output tree's C toolchain. The same targets build in
# Bazel too:  bazel --output_base=/tmp/stp-fuzz-bazel build --config=fuzz
# //test/fuzz:fuzzers  (see test/fuzz/BUILD.bazel and .bazelrc).
set -u
cd "$(dirname "$0")/../.."

secs=${1:-10}
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
out=${STP_FUZZ_OUT:-/tmp/stp-fuzz}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cc=${CC_FUZZ:-/usr/bin/clang}
[ -x "$cc" ] || cc=$(command -v clang || true)
if [ -z "$cc" ]; then
  echo "FAIL fuzz: no clang (install clang and libclang-rt-dev)"
  echo "0 passed, 1 failed"
  exit 1
fi

# The house warnings, without -Werror: this build's job is finding crashes,
# and `bazel build` already enforces warnings with gcc.
flags="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -g -O1
  -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=all -I. -I/usr/include/android"

# target -> the sources and libraries it links (as in test/fuzz/BUILD.bazel)
declare -A srcs=(
  [fuzz_smtp_line]="proxy/smtp_line.c"
  [fuzz_smtp_cmd]="proxy/smtp_cmd.c"
  [fuzz_envelope]="proxy/envelope.c policy/domain_name.c -lidn2"
  [fuzz_smtp_reply]="proxy/smtp_reply.c"
  [fuzz_ehlo]="proxy/ehlo.c proxy/smtp_reply.c"
  [fuzz_data_scan]="proxy/data_scan.c"
  [fuzz_dns_msg]="policy/dns_msg.c"
  [fuzz_mta_sts]="policy/mta_sts.c policy/domain_name.c -lidn2"
  [fuzz_http_resp]="policy/http_resp.c"
  [fuzz_policy_cache]="policy/policy_cache.c policy/mta_sts.c policy/domain_name.c -lidn2"
  [fuzz_config]="proxy/config.c policy/cidr.c policy/domain_policy.c policy/domain_name.c -linih -lidn2"
  [fuzz_proxy_proto]="proxy/proxy_proto.c"
  [fuzz_http_req]="proxy/http_req.c"
  [fuzz_cidr]="policy/cidr.c"
  [fuzz_xclient]="proxy/xclient.c proxy/smtp_reply.c"
  [fuzz_tls_name]="tls/tls_verify.c -L/usr/lib/x86_64-linux-gnu/android
    -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto"

  # the whole daemon but main(): every proxy/, tls/ and policy/ source; and
  # the DNS, certificates and MTA-STS server of its route = mx listeners
  [fuzz_session]="test/fuzz/mx_world.c
    $(ls proxy/*.c tls/*.c policy/*.c | grep -v '^proxy/main\.c$' | tr '\n' ' ')
    -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android
    -lssl -lcrypto -luv -linih -lcares -lidn2"
)
# The parser targets must exist; fuzz_config is optional (written elsewhere).
required="fuzz_cidr fuzz_data_scan fuzz_dns_msg fuzz_ehlo fuzz_envelope fuzz_http_req fuzz_http_resp fuzz_mta_sts fuzz_policy_cache fuzz_proxy_proto fuzz_session fuzz_smtp_cmd fuzz_smtp_line fuzz_smtp_reply fuzz_tls_name fuzz_xclient"

passed=0
failed=0
for t in $(printf '%s\n' "${!srcs[@]}" | sort); do
  if [ ! -f "test/fuzz/$t.c" ]; then
    case " $required " in
      *" $t "*) echo "FAIL $t: test/fuzz/$t.c is missing"; failed=$((failed + 1)) ;;
    esac
    continue
  fi
  # shellcheck disable=SC2086
  if ! "$cc" $flags -o "$out/$t" "test/fuzz/$t.c" ${srcs[$t]} >"$out/$t.build.log" 2>&1; then
    echo "FAIL $t: build"
    sed 's/^/    /' "$out/$t.build.log" | head -20
    failed=$((failed + 1))
    continue
  fi
  work="$out/$t.corpus"
  rm -rf "$work" && mkdir -p "$work"
  if [ -d "test/fuzz/corpus/$t" ]; then
    cp test/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
  fi
  # A target's own dictionary (test/fuzz/<target minus fuzz_>.dict) if it has one.
  dict=()
  if [ -f "test/fuzz/${t#fuzz_}.dict" ]; then
    dict=(-dict="$PWD/test/fuzz/${t#fuzz_}.dict")
  elif [ "$t" != fuzz_config ] && [ "$t" != fuzz_dns_msg ]; then
    dict=(-dict="$PWD/test/fuzz/smtp.dict")
  fi
  # Run from the output directory: crash files and anything the target
  # opens by a relative name stay out of the tree. `timeout` is a backstop
  # for a target that hangs outside libFuzzer's own -timeout.
  rm -f "$out/$t"-crash-* "$out/$t"-leak-* "$out/$t"-timeout-* "$out/$t"-oom-*
  if (cd "$out" && timeout $((secs + 120)) "./$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$out/$t-" "$work" >"$out/$t.log" 2>&1); then
    runs=$(grep -Eo '^Done [0-9]+ runs' "$out/$t.log" | grep -Eo '[0-9]+')
    echo "PASS $t (${runs:-?} runs in ${secs}s)"
    passed=$((passed + 1))
  else
    echo "FAIL $t: see $out/$t.log"
    grep -E "ERROR|SUMMARY|Test unit written|deadly signal" "$out/$t.log" | head -5 |
      sed 's/^/    /'
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
