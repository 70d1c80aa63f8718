#!/usr/bin/env python3
"""The security conformance suite: every attack and fault of issue 7 as a
named case with its expected outcome, run against the real binary with
scripted malicious peers, printed as a table:

  case                         expected                     observed                   result

then exactly "N passed, N failed" (exit 1 on any failure).

A case is a test: most are in test/conformance/cases.py, the rest are the
integration tests that already cover them (test/integration/test_*.py),
referenced by name rather than copied. The testssl.sh cases are in
test/conformance/testssl.py.

  run.py [-j JOBS] [-v] [SUBSTRING ...]   only cases whose name contains one

Each case runs in its own python process (JOBS at a time, default 4) with
a timeout, so one hung case cannot stop the others. -v prints each failing
case's output. Env: STP_BIN, STP_CERTS (as for test/integration/run.py),
STP_CONFORMANCE_TIMEOUT (seconds per case, default 120).
"""
import concurrent.futures
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
INTEGRATION = os.path.join(ROOT, "test/integration")

# (case, expected outcome, test id). Test ids name a module in
# test/conformance or test/integration, a class and a method.
I, O, B, F, T = "inbound", "outbound", "both", "fault", "tls"
CASES = [
    # inbound
    (I, "starttls_command_injection", "injected RSET/MAIL discarded, never executed in TLS",
     "test_attacks.StarttlsBoundary.test_command_injection_in_one_segment"),
    (I, "starttls_injection_crlf_bare_lf", "injected commands behind bare LF discarded",
     "test_attacks.StarttlsBoundary.test_injection_with_crlf_and_bare_lf"),
    (I, "credential_theft_injection", "MAIL/RCPT/DATA before the handshake never executed",
     "cases.Inbound.test_credential_theft_injection"),
    (I, "auth_pipelined_behind_starttls", "AUTH behind STARTTLS discarded",
     "cases.Inbound.test_auth_pipelined_after_starttls"),
    (I, "plaintext_after_220", "connection closed, nothing forwarded",
     "cases.Inbound.test_plaintext_after_220"),
    (I, "pre_tls_envelope_reused", "MAIL before TLS forgotten: RCPT 503, no mail",
     "test_attacks.StarttlsBoundary.test_envelope_before_starttls_not_reused"),
    (I, "mail_before_new_ehlo", "MAIL/RCPT/DATA after TLS before EHLO: 503 5.5.1",
     "test_attacks.StarttlsBoundary.test_mail_after_tls_before_new_ehlo_refused"),
    (I, "starttls_twice", "second STARTTLS (inside TLS): 554 5.5.1",
     "test_attacks.StarttlsBoundary.test_starttls_inside_tls_refused"),
    (I, "starttls_with_argument", "501 5.5.4, session continues in plaintext",
     "test_attacks.StarttlsBoundary.test_starttls_with_argument"),
    (I, "starttls_on_implicit_port", "554 5.5.1",
     "test_attacks.StarttlsBoundary.test_starttls_on_implicit_listener_refused"),
    (I, "auth_before_tls", "530 5.7.0, AUTH never forwarded",
     "test_attacks.StarttlsBoundary.test_auth_before_tls_refused_and_never_forwarded"),
    (I, "auth_payload_not_logged", "AUTH payloads absent from the log",
     "test_attacks.StarttlsBoundary.test_auth_payload_never_logged"),
    (I, "require_tls_envelope_before_tls", "530 5.7.0 for MAIL/RCPT/DATA/AUTH",
     "test_attacks.RequireTls.test_commands_before_tls"),
    (I, "require_tls_pipelined_envelope", "530 5.7.0 each, nothing forwarded",
     "test_attacks.RequireTls.test_pipelined_envelope_before_tls"),
    (I, "talking_before_greeting", "greeting first, nothing run before the backend greets",
     "cases.EarlyTalker.test_talking_before_greeting"),
    (I, "starttls_before_greeting", "no TLS before the greeting",
     "cases.EarlyTalker.test_starttls_before_greeting"),
    (I, "pipelining_without_ehlo", "one reply per command, in order; one message",
     "cases.Inbound.test_pipelining_without_ehlo"),
    (I, "plaintext_on_implicit_port", "closed, no SMTP from the backend",
     "test_attacks.StarttlsBoundary.test_plaintext_on_implicit_listener"),
    (I, "renegotiation_tls12", "refused; proxy keeps serving",
     "cases.Inbound.test_renegotiation_refused"),
    (I, "handshake_bytes_inside_tls", "500-class reply, session continues",
     "cases.Inbound.test_implicit_tls_renegotiation_refused"),
    (I, "xclient_xforward_bdat", "550 5.7.0 / 502 5.5.1 and closed, never forwarded",
     "test_attacks.RefusedCommands.test_xclient_xforward_bdat"),
    (I, "overlong_command_line", "500 5.5.2, then normal service",
     "test_attacks.RefusedCommands.test_overlong_line_then_normal_service"),
    (I, "escape_sequences_in_log", "no raw ESC/BEL in the log",
     "test_attacks.RefusedCommands.test_escape_sequences_not_logged_raw"),
    (I, "xclient_nameless_ehlo", "503 until XCLIENT is accepted; Postfix sees the real client",
     "test_xclient.XclientPostfix.test_refused_first_ehlo_does_not_skip_xclient"),
    (I, "sasl_response_bare_cr", "AUTH cancelled with '*'; nothing behind the CR forwarded",
     "test_attacks.SaslResponse.test_bare_cr_cancels_the_exchange"),
    (I, "proxy_header_and_clienthello", "one segment: the handshake goes on",
     "test_proxy_protocol.HeaderAndClientHelloTogether.test_one_send"),
    # outbound (levels none/may/encrypt/verify/secure, see test_outbound.SCENARIOS)
    (O, "response_injection_after_220", "4.7.5 where TLS is required; nothing sent",
     "test_outbound.Levels.test_injection_after_220"),
    (O, "fragment_after_220", "4.7.5 where TLS is required; nothing sent",
     "test_outbound.Levels.test_fragment_after_220"),
    (O, "starttls_stripped", "4.7.4 where TLS is required",
     "test_outbound.Levels.test_starttls_stripped"),
    (O, "starttls_454", "4.7.4 where TLS is required", "test_outbound.Levels.test_starttls_454"),
    (O, "starttls_502", "4.7.4 where TLS is required", "test_outbound.Levels.test_starttls_502"),
    (O, "starttls_421", "4xx, nothing sent", "test_outbound.Levels.test_starttls_421"),
    (O, "starttls_garbage", "4xx from may up", "test_outbound.Levels.test_starttls_garbage"),
    (O, "esmtp_hidden_helo_only", "4.7.4 where TLS is required",
     "test_outbound.Levels.test_esmtp_hidden"),
    (O, "cert_self_signed", "4.7.5 at verify/secure", "test_outbound.Levels.test_self_signed"),
    (O, "cert_unknown_ca", "4.7.5 at verify/secure", "test_outbound.Levels.test_unknown_ca"),
    (O, "cert_wrong_name", "4.7.5 at verify/secure", "test_outbound.Levels.test_wrong_name"),
    (O, "cert_expired", "4.7.5 at verify/secure", "test_outbound.Levels.test_expired"),
    (O, "cert_wildcard_trick", "4.7.5 at verify/secure",
     "test_outbound.Levels.test_wildcard_trick"),
    (O, "tls10_only_peer", "4.7.5 where TLS is required", "test_outbound.Levels.test_tls10_only"),
    (O, "tls11_only_peer", "4.7.5 where TLS is required", "test_outbound.Levels.test_tls11_only"),
    (O, "sni_sent", "SNI = servername", "test_outbound.Behaviour.test_sni_sent_is_servername"),
    (O, "open_relay_probe", "554 5.7.1 outside allow, nothing delivered",
     "test_outbound.Behaviour.test_not_an_open_relay"),
    (O, "open_relay_probe_other_address", "554 5.7.1 from 127.0.0.2, nothing relayed",
     "cases.OpenRelay.test_probe_from_outside_allow"),
    (O, "nexthop_drops_after_dot", "never 250 to the legacy MTA",
     "test_outbound.Behaviour.test_drop_after_dot_never_250"),
    (O, "auth_after_stripped_starttls", "may: AUTH hidden and 538 5.7.11, never sent in plaintext",
     "test_outbound.Behaviour.test_auth_never_in_plaintext_under_may"),
    (O, "auth_to_unverified_under_testing", "verify+testing: AUTH hidden and 538 5.7.11",
     "test_outbound.Behaviour.test_auth_never_to_an_unverified_next_hop_under_testing"),
    (O, "unusable_tlsa_remembered_domain", "4.7.5 for a certificate not valid for the MX",
     "test_mx.Dane.test_unusable_tlsa_keeps_remembered_tls"),
    (O, "unusable_tlsa_mta_sts_enforce", "4.7.5 for a certificate not valid for the MX",
     "test_mx.Dane.test_unusable_tlsa_keeps_mta_sts_enforce"),
    (O, "dns_failure_under_reject", "451 4.4.3 / 4.7.5, never a bounce",
     "test_mx.MtaSts.test_unknown_policy_stays_4_4_3_under_reject"),
    # both directions
    (B, "backend_drops_after_dot", "421 4.4.2, never 250",
     "test_backend.ClosesAfterData.test_lost_before_final_reply_is_421"),
    (B, "malformed_reply", "never 2xx", "cases.BadReplies.test_malformed_reply"),
    (B, "malformed_reply_code", "never 2xx", "cases.BadReplies.test_malformed_reply_code"),
    (B, "mixed_multiline_codes", "never 2xx", "cases.BadReplies.test_mixed_multiline_codes"),
    (B, "overlong_reply_line", "never 2xx", "cases.BadReplies.test_overlong_reply_line"),
    (B, "endless_multiline_reply", "never 2xx", "cases.BadReplies.test_endless_multiline_reply"),
    (B, "reply_before_dot", "never 2xx for a message not yet sent",
     "cases.BadReplies.test_reply_before_dot"),
    (B, "unsolicited_reply", "never 2xx", "cases.BadReplies.test_unsolicited_reply"),
    (B, "1000_rcpts", "each RCPT answered in order; one message", "cases.ManyRcpts.test_1000_rcpts_pipelined"),
    (B, "size_exceeded", "552 5.3.4, nothing stored", "cases.SizeLimit.test_size_exceeded"),
    (B, "size_exceeded_last_chunk", "552 5.3.4, the dot never forwarded", "cases.SizeLimit.test_size_exceeded_in_the_last_chunk"),
    (B, "size_exactly_at_the_limit", "SIZE bytes accepted, one more 552 5.3.4",
     "cases.SizeLimit.test_size_exactly_at_the_limit"),
    (B, "size_declared_too_big", "EHLO shows the limit; 552 5.3.4 at MAIL", "cases.SizeLimit.test_size_declared_too_big"),
    (B, "slowloris_greeting_phase", "421 4.4.2 (idle_timeout)",
     "cases.Slowloris.test_silent_before_greeting_reply"),
    (B, "slowloris_command_dribble", "421 4.4.2 by session_timeout",
     "cases.Slowloris.test_dribble_command"),
    (B, "slowloris_data_dribble", "closed by session_timeout, nothing stored",
     "cases.Slowloris.test_dribble_data"),
    (B, "slowloris_handshake_dribble", "closed by handshake/session timeout",
     "cases.Slowloris.test_dribble_handshake"),
    (B, "slowloris_command_stall", "421 4.4.2 (idle_timeout)",
     "test_limits.IdleTimeout.test_stalled_client_gets_421"),
    (B, "slowloris_data_stall", "421 4.4.2, nothing stored",
     "test_limits.DataTimeout.test_stall_inside_data_never_delivers"),
    (B, "slowloris_handshake_stall", "closed (handshake_timeout)",
     "test_limits.HandshakeTimeout.test_no_client_hello"),
    (B, "flood_one_ip", "per-IP cap: 421 4.7.0 beyond it", "cases.Flood.test_flood_from_one_ip"),
    (B, "too_many_errors", "421 4.7.0 at the 20th refusal",
     "test_attacks.RefusedCommands.test_too_many_errors_ends_the_session"),
    (B, "replies_never_read", "reading stops; memory bounded",
     "test_limits.UnreadReplies.test_flood_of_noop_is_not_read_unboundedly"),
    (B, "half_close_after_dot", "the reply to the dot still arrives",
     "test_backend.HalfCloseAfterTheDot.test_reply_to_the_dot_still_arrives"),
    (B, "total_connection_cap", "421 4.7.0 beyond max_connections",
     "test_limits.TotalLimit.test_fourth_connection_refused"),
    (B, "dots_are_content", "dot lines stuffed and unstuffed exactly",
     "test_attacks.Smuggling.test_dots_are_content"),
    (B, "nul_in_data", "reject: 554 5.6.0; normalize: NUL deleted, dot kept as content",
     "test_attacks.Smuggling.test_nul_refused_or_deleted"),
]
for _name in ("lf_dot_lf", "lf_dot_cr", "cr_dot_lf", "cr_dot_cr", "lf_dot_crlf", "cr_dot_crlf",
              "crlf_nul_dot_crlf", "crlf_dot_nul_crlf", "crlf_dot_lf", "crlf_dot_cr", "lf_dot_cr_crlf",
              "cr_dot_cr_crlf"):
    CASES.append((B, "smuggling_" + _name, "no second message at a lenient backend",
                  "cases.SmugglingEndings.test_" + _name))
CASES += [
    (B, "smuggling_inside_tls", "554 5.6.0, nothing stored",
     "test_attacks.Smuggling.test_reject_mode_inside_tls"),
    # faults
    (F, "backend_sigkill_mid_data", "never 2xx; nothing stored",
     "cases.Faults.test_backend_sigkill_mid_data"),
    (F, "nexthop_closes_mid_handshake", "4.7.5 deferral, nothing sent",
     "cases.OutboundFaults.test_nexthop_closes_mid_handshake"),
    (F, "nexthop_closes_mid_handshake_levels", "may retries in plaintext; 4.7.5 above",
     "test_outbound.Levels.test_closed_mid_handshake"),
    (F, "nexthop_stalls_mid_handshake_levels", "may retries in plaintext; 4.7.5 above",
     "test_outbound.Levels.test_stalled_mid_handshake"),
    (F, "proxy_sigkill_in_transaction", "2xx only for stored messages",
     "cases.Faults.test_proxy_sigkill_during_transaction"),
    (F, "backend_killed_between_commands", "421 4.4.2",
     "test_backend.BackendLostMidSession.test_backend_killed_between_commands"),
    # the TLS posture graded by testssl.sh
    (T, "testssl_starttls_listener", "no SSLv2/3, TLS1.0/1.1, weak ciphers, compression, "
     "client renegotiation, HIGH/CRITICAL", "testssl.Testssl.test_starttls"),
    (T, "testssl_implicit_listener", "as above, plain TLS", "testssl.Testssl.test_implicit"),
]


def run_one(test_id):
    """Runs one test id in a child process: (ok, observed, output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, INTEGRATION, env.get("PYTHONPATH", "")])
    limit = float(os.environ.get("STP_CONFORMANCE_TIMEOUT", "120"))
    t0 = time.time()
    # The case leads a session of its own: on a timeout its whole group (the
    # proxy, peers and DNS servers it started, and only those) is stopped.
    p = subprocess.Popen([sys.executable, "-m", "unittest", "-q", test_id], cwd=HERE, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        raw, _ = p.communicate(timeout=limit)
        out, rc = raw.decode("utf-8", "replace"), p.returncode
    except subprocess.TimeoutExpired:
        raw = b""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                raw, _ = p.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                raw = b""
        out, rc = raw.decode("utf-8", "replace") + "\ncase timed out", 1
    observed = [l[len("OBSERVED: "):] for l in out.splitlines() if l.startswith("OBSERVED: ")]
    # a skipped case proved nothing: unittest says "OK (skipped=1)" and exits 0
    ok = rc == 0 and "\nOK" in "\n" + out and "skipped=" not in out
    if rc == 0 and "skipped=" in out:
        out += "\ncase skipped"
    if ok:
        text = observed[-1] if observed else "as expected"
    else:
        errs = [l for l in out.splitlines() if l.startswith(("AssertionError", "Error", "case timed",
                                                             "case skipped",
                                                             "RuntimeError", "TypeError"))]
        text = (errs[-1] if errs else out.strip().splitlines()[-1] if out.strip() else "no output")
    return ok, text, out, time.time() - t0


def main():
    args = sys.argv[1:]
    jobs, verbose = 4, False
    while args and args[0].startswith("-"):
        a = args.pop(0)
        if a == "-j":
            jobs = int(args.pop(0))
        elif a == "-v":
            verbose = True
        else:
            print(__doc__)
            return 2
    if not os.environ.get("STP_CERTS"):
        certs = os.path.join(ROOT, "test/certs/out")
        subprocess.run(["bash", os.path.join(ROOT, "test/certs/gen.sh"), certs], check=True)
        os.environ["STP_CERTS"] = certs
    cases = [c for c in CASES if not args or any(f in c[1] for f in args)]
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda c: run_one(c[3]), cases))
    w = max(len(c[1]) for c in cases) if cases else 4
    print("%-9s %-*s %-52s %-60s %s" % ("direction", w, "case", "expected", "observed", "result"))
    passed = failed = 0
    for (direction, name, expected, test_id), (ok, text, out, secs) in zip(cases, results):
        print("%-9s %-*s %-52s %-60s %s" % (direction, w, name, expected, text, "PASS" if ok else "FAIL"))
        if ok:
            passed += 1
        else:
            failed += 1
            if verbose:
                print("    " + test_id + "\n    " + out.rstrip().replace("\n", "\n    "))
    sys.stderr.write("conformance suite took %.1fs\n" % (time.time() - started))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
