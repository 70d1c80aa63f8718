"""The proxy's resolver (proxy/resolver.c, through the test/dns/resolve tool)
against real DNS on loopback: nsd serving zones signed at test time, unbound
validating them, and the scripted responder for what real servers never say.

What it proves: AD=1 reaches the proxy for the signed zone and AD=0 for the
insecure one; a tampered signature is SERVFAIL (bogus -> defer); MX comes
sorted, null MX and "no MX" are recognised; TLSA, TXT and addresses are
parsed from the raw answers (CNAMEs followed, the final name and the
chain's verdict kept for DANE); timeouts, REFUSED, TCP
fallback after TC, and malformed answers (pointer loops, forward pointers,
lying counts, 64-byte labels) each give their own status.
"""
import json
import os
import shutil
import subprocess
import time
import unittest

import harness
from dnsenv import DnsEnv, Responder


def resolve_bin():
    """STP_RESOLVE (test/run.sh sets it, to the ASan build in that pass), or bazel-bin's."""
    return os.environ.get("STP_RESOLVE") or os.path.join(harness.ROOT, "bazel-bin/test/dns/resolve")


def resolve(server, kind, name, timeout_ms=5000):
    r = subprocess.run([resolve_bin(), "--server", server, "--timeout", str(timeout_ms), kind, name],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise AssertionError("resolve %s %s: exit %d: %s" % (kind, name, r.returncode, r.stderr.decode()))
    if r.stderr:  # sanitizer reports, even with exit 0
        raise AssertionError("resolve %s %s: stderr: %s" % (kind, name, r.stderr.decode()[:2000]))
    return json.loads(r.stdout)


class Validating(unittest.TestCase):
    """nsd + unbound: what a validating resolver tells the proxy."""

    def setUp(self):
        if not os.access(resolve_bin(), os.X_OK):
            self.fail("no %s (bazel build //test/dns:resolve)" % resolve_bin())
        self.tmp = harness.tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # v6bogus: its AAAA is bogus, its A validates; v4bogus the other way
        self.dns = DnsEnv(self.tmp, extra={"example.test": [
            "v6bogus IN A 127.0.0.5", "v6bogus IN AAAA ::5",
            "v4bogus IN A 127.0.0.6", "v4bogus IN AAAA ::6",
            "toinsecure IN CNAME mx.insecure.test.", "chain IN CNAME toinsecure"]},
            tamper=["v6bogus.example.test AAAA", "v4bogus.example.test A"])
        self.addCleanup(self.dns.stop)

    def q(self, kind, name):
        return resolve(self.dns.resolver, kind, name)

    def test_signed_zone_is_secure(self):
        r = self.q("mx", "example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)
        self.assertEqual(r["mx"], [[10, "mx1.example.test"], [20, "mx2.example.test"]])
        r = self.q("tlsa", "mx1.example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)
        self.assertEqual(r["name"], "_25._tcp.mx1.example.test")
        self.assertEqual(r["tlsa"], [[3, 1, 1, "0123456789abcdef" * 4]])
        r = self.q("tlsa", "mx2.example.test")
        self.assertEqual(r["tlsa"], [[2, 0, 1, "fedcba9876543210" * 4]])
        r = self.q("addrs", "mx1.example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)
        self.assertEqual(r["addrs"], ["127.0.0.1", "::1"])  # IPv4 first
        r = self.q("txt", "_mta-sts.example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)
        self.assertEqual(r["txt"], ["v=STS1; id=20240101"])  # strings concatenated
        r = self.q("dnssec", "example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)

    def test_cname_followed_for_tlsa(self):
        r = self.q("tlsa", "alias.example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)
        self.assertEqual(r["name"], "_25._tcp.mx1.example.test")
        self.assertEqual(r["tlsa"], [[3, 1, 1, "0123456789abcdef" * 4]])

    def test_cname_expanded_for_addresses(self):
        # DANE's TLSA base domain (RFC 7672 2.2.2): the name at the end of the
        # CNAMEs, and whether the whole chain validated
        r = self.q("addrs", "alias.example.test")
        self.assertEqual((r["status"], r["secure"], r["name"]), ("ok", True, "mx1.example.test"), r)
        self.assertEqual(r["addrs"], ["127.0.0.1", "::1"])
        r = self.q("addrs", "mx1.example.test")
        self.assertEqual((r["name"], r["secure"]), ("mx1.example.test", True), r)
        # a signed CNAME into an unsigned zone: the chain is not secure
        r = self.q("addrs", "toinsecure.example.test")
        self.assertEqual((r["status"], r["secure"], r["name"]), ("ok", False, "mx.insecure.test"), r)

    def test_cname_record_of_a_name_alone(self):
        # DANE for an MX host whose own CNAME is signed while its expansion
        # is not (RFC 7672 2.2.2): the address answer's AD bit covers the
        # whole chain, the CNAME query gives the first link's own verdict
        r = self.q("cname", "toinsecure.example.test")
        self.assertEqual((r["status"], r["secure"], r["target"]), ("ok", True, "mx.insecure.test"),
                         r)
        self.assertEqual(r["name"], "toinsecure.example.test")
        self.assertEqual(r["addrs"], [])
        # the link asked for, not the end of the chain
        r = self.q("cname", "chain.example.test")
        self.assertEqual((r["status"], r["secure"], r["target"]),
                         ("ok", True, "toinsecure.example.test"), r)
        # no alias: validated NODATA, or NXDOMAIN; in the unsigned zone, insecure
        r = self.q("cname", "mx1.example.test")
        self.assertEqual((r["status"], r["secure"], r["target"]), ("nodata", True, ""), r)
        r = self.q("cname", "nope.example.test")
        self.assertEqual((r["status"], r["secure"]), ("nxdomain", True), r)
        r = self.q("cname", "mx.insecure.test")
        self.assertEqual((r["status"], r["secure"]), ("nodata", False), r)

    def test_null_mx_implicit_mx_nxdomain_nodata(self):
        r = self.q("mx", "nullmx.example.test")
        self.assertEqual((r["status"], r["null_mx"], r["mx"]), ("ok", True, []), r)
        r = self.q("mx", "nomx.example.test")
        self.assertEqual((r["status"], r["implicit_mx"]), ("ok", True), r)
        self.assertEqual(r["mx"], [[0, "nomx.example.test"]])
        r = self.q("mx", "nope.example.test")
        self.assertEqual((r["status"], r["secure"]), ("nxdomain", True), r)  # denial validated
        r = self.q("txt", "mx1.example.test")
        self.assertEqual((r["status"], r["secure"]), ("nodata", True), r)
        r = self.q("tlsa", "nomx.example.test")
        self.assertEqual(r["status"], "nxdomain", r)

    def test_insecure_zone_is_not_secure(self):
        r = self.q("mx", "insecure.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", False), r)
        self.assertEqual(r["mx"], [[10, "mx.insecure.test"]])
        r = self.q("tlsa", "mx.insecure.test")
        # the records arrive, but unauthenticated: DANE must not use them
        self.assertEqual((r["status"], r["secure"]), ("ok", False), r)
        self.assertEqual(len(r["tlsa"]), 1)

    def test_bogus_signature_is_servfail(self):
        for kind, name in [("mx", "bogus.test"), ("tlsa", "mx.bogus.test"), ("addrs", "mx.bogus.test")]:
            r = self.q(kind, name)
            self.assertEqual((r["status"], r["secure"]), ("servfail", False),
                             (kind, name, r, self.dns.logs()))
            self.assertEqual(r["mx"] + r["tlsa"] + r["addrs"], [])
        # nsd itself serves the tampered data: only validation refuses it
        r = resolve("127.0.0.1:%d" % self.dns.nsd_port, "mx", "bogus.test")
        self.assertEqual(r["mx"], [[10, "evil.bogus.test"]], r)

    def test_failed_address_family_is_left_out(self):
        # One family bogus (SERVFAIL), the other validated: the addresses
        # that validated, secure (a failed family must not switch DANE off)
        r = self.q("addrs", "v6bogus.example.test")
        self.assertEqual((r["status"], r["secure"], r["addrs"]), ("ok", True, ["127.0.0.5"]),
                         (r, self.dns.logs()))
        r = self.q("addrs", "v4bogus.example.test")
        self.assertEqual((r["status"], r["secure"], r["addrs"]), ("ok", True, ["::6"]),
                         (r, self.dns.logs()))

    def test_authoritative_server_does_not_validate(self):
        # the start-up check: a non-validating server gives no AD bit
        r = resolve("127.0.0.1:%d" % self.dns.nsd_port, "dnssec", "example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", False), r)
        r = resolve("127.0.0.1:%d" % self.dns.nsd_port, "mx", "example.test")
        self.assertEqual((r["status"], r["secure"]), ("ok", False), r)
        r = resolve("127.0.0.1:%d" % self.dns.nsd_port, "startup", "example.test")
        self.assertEqual(r, {"validates": False, "why": "no AD bit on the DNSKEY of example.test: "
                                                        "the resolver does not validate DNSSEC"})
        r = resolve(self.dns.resolver, "startup", "example.test")
        self.assertEqual(r, {"validates": True,
                             "why": "the DNSKEY of example.test validated (AD bit set)"})
        # a probe name outside any signed zone: nothing to validate
        r = resolve(self.dns.resolver, "startup", "insecure.test")
        self.assertEqual(r, {"validates": False,
                             "why": "DNSKEY of insecure.test: no records of that type"})


class Scripted(unittest.TestCase):
    """test/peers/dns_responder.py: failures and malformed answers."""

    def setUp(self):
        if not os.access(resolve_bin(), os.X_OK):
            self.fail("no %s (bazel build //test/dns:resolve)" % resolve_bin())
        self.tmp = harness.tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_mode(self, mode, kind="mx", name="x.test", timeout_ms=3000):
        with Responder(self.tmp, mode) as resp:
            t0 = time.time()
            r = resolve(resp.addr, kind, name, timeout_ms)
            return r, time.time() - t0

    def test_servfail_refused_timeout(self):
        r, _ = self.run_mode("servfail")
        self.assertEqual(r["status"], "servfail", r)
        r, _ = self.run_mode("refused")
        self.assertEqual((r["status"], r["why"]), ("error", "REFUSED"), r)
        r, took = self.run_mode("silent", timeout_ms=800)
        self.assertEqual(r["status"], "timeout", r)
        self.assertLess(took, 5, "the timeout bounds the whole query, retries included")
        r, took = self.run_mode("silent", kind="startup", name="example.test", timeout_ms=800)
        self.assertEqual(r, {"validates": False, "why": "DNSKEY of example.test: timed out"})

    def test_malformed_answers(self):
        for mode, why in [("loop", "compression pointer does not point backwards"),
                          ("forward", "compression pointer does not point backwards"),
                          ("lying", "name runs past its end"),
                          ("longlabel", "reserved label type")]:
            r, _ = self.run_mode(mode)
            self.assertEqual((r["status"], r["why"], r["mx"]), ("error", why, []), (mode, r))

    def test_truncated_udp_retried_over_tcp(self):
        r, _ = self.run_mode("tc")
        self.assertEqual((r["status"], r["secure"]), ("ok", True), r)
        self.assertEqual(r["mx"], [[10, "mx.tc.test"]])

    def test_implicit_mx_name_too_long_for_a_host(self):
        # no MX at the end of a CNAME to a name of 763 characters (\DDD
        # escapes): too long to be the implicit MX host, the lookup fails
        r, _ = self.run_mode("longcname")
        self.assertEqual((r["status"], r["why"], r["mx"]),
                         ("error", "no MX, and the name (after CNAMEs) is too long for a mail host",
                          []), r)
        self.assertFalse(r["implicit_mx"], r)

    def test_mx_sorted_stably(self):
        r, _ = self.run_mode("mx")
        self.assertEqual(r["mx"], [[10, "a.example"], [10, "c.example"], [20, "b.example"]], r)
        self.assertTrue(r["secure"])


if __name__ == "__main__":
    unittest.main()
