"""route = original-dst: a legacy MTA's connection redirected by nftables,
over IPv4 (SO_ORIGINAL_DST) and IPv6 (IP6T_SO_ORIGINAL_DST).

Runs in a private network namespace: the legacy client connects from a
second loopback address (127.0.0.2, or fd00:5c::2 for IPv6) to the next
hop's port, an nftables REDIRECT (`table ip` / `table ip6`) sends it to the
proxy, and the proxy reads the original destination and secures that. The
proxy's own connection (from 127.0.0.1 or ::1) is exempt from the rule by
its source address; on a real host the exemption is a socket-owner match
(see README).
"""
import os
import shutil
import subprocess
import unittest

import harness
from harness import CERTS, NextHop, Proxy, free_port, tmpdir

CLIENT = r"""
import smtplib, sys
try:
    s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=15, source_address=(sys.argv[3], 0))
    s.ehlo("legacy.example")
    s.sendmail("a@example.test", ["b@example.test"], b"Subject: redirected\r\n\r\nbody\r\n")
    s.quit()
    print("delivered")
except smtplib.SMTPResponseException as e:
    print("refused %d %s" % (e.smtp_code, e.smtp_error.decode()))
except smtplib.SMTPServerDisconnected as e:
    print("disconnected %s" % e)
"""

V6_CLIENT = "fd00:5c::2"


class OriginalDst(unittest.TestCase):
    def setUp(self):
        self.ns = "stp-it-%d" % os.getpid()
        if os.geteuid() != 0:
            self.skipTest("original-dst: needs root for a network namespace")
        r = subprocess.run(["ip", "netns", "add", self.ns], capture_output=True)
        if r.returncode != 0:
            self.skipTest("original-dst: kernel refused a network namespace: %s" % r.stderr)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], capture_output=True)
        self.ns_run(["ip", "link", "set", "lo", "up"])
        self.hop_port, self.proxy_port = free_port(), free_port()
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        harness.PREFIX = ["ip", "netns", "exec", self.ns]
        self.addCleanup(setattr, harness, "PREFIX", [])

    def ns_run(self, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.ns] + argv, check=kw.pop("check", True),
                              capture_output=True, **kw)

    def redirect(self, family, client, ports=None):
        """The legacy MTA's rule: its connections to the next hop's port (or
        ports) go to the proxy. Skips the test where the kernel refuses it."""
        dports = ", ".join(str(p) for p in (ports or [self.hop_port]))
        rules = ("table %s stp {\n chain out {\n  type nat hook output priority -100;\n"
                 "  %s saddr %s tcp dport { %s } redirect to :%d\n }\n}\n"
                 % (family, family, client, dports, self.proxy_port))
        r = self.ns_run(["nft", "-f", "-"], input=rules.encode(), check=False)
        if r.returncode != 0:
            self.skipTest("original-dst: nftables %s REDIRECT refused by the kernel: %s"
                          % (family, r.stderr.decode().strip()))

    def client(self, host, port, source):
        out = self.ns_run([harness.PY, "-c", CLIENT, host, str(port), source], check=False,
                          timeout=30)
        return out.stdout.decode().strip()

    def proxy(self, listen, allow, **keys):
        k = {"mode": "outbound", "listen": listen, "route": "original-dst", "tls": "verify",
             "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem"),
             "allow": allow}
        k.update(keys)
        p = Proxy(self.tmp, {"out": k}, tls=False, ports={"out": self.proxy_port},
                  proxy_extra={"workers": "1"})
        self.addCleanup(p.stop)
        return p

    def test_redirected_connection_is_secured(self):
        self.redirect("ip", "127.0.0.2")
        hop = NextHop(self.tmp, "good", port=self.hop_port)
        self.addCleanup(hop.stop)
        p = self.proxy("127.0.0.1:%d" % self.proxy_port, "127.0.0.0/8")

        self.assertEqual(self.client("127.0.0.1", self.hop_port, "127.0.0.2"), "delivered")
        self.assertEqual([f[-8:] for f in hop.stored()], ["-tls.eml"])
        # not redirected: the proxy refuses instead of looping to itself
        got = self.client("127.0.0.1", self.proxy_port, "127.0.0.1")
        self.assertTrue(got.startswith("refused 421") or got.startswith("disconnected"), got)
        self.assertEqual(p.stop(), 0)
        self.assertIn("next_hop=127.0.0.1:%d" % self.hop_port, p.log())
        self.assertIn("result=no-original-dst", p.log())

    def test_cached_connections_stay_with_their_destination(self):
        """connection_cache_time with route = original-dst: a parked
        connection is reused only for the same original destination; mail
        redirected toward another server never takes it."""
        other = free_port()
        self.redirect("ip", "127.0.0.2", [self.hop_port, other])
        hop_a = NextHop(self.tmp, "good", port=self.hop_port)
        self.addCleanup(hop_a.stop)
        hop_b = NextHop(self.tmp, "good", port=other)
        self.addCleanup(hop_b.stop)
        p = self.proxy("127.0.0.1:%d" % self.proxy_port, "127.0.0.0/8",
                       connection_cache_time="30s")
        for port in (self.hop_port, other, self.hop_port, other):
            self.assertEqual(self.client("127.0.0.1", port, "127.0.0.2"), "delivered")
        self.assertEqual(hop_a.stored(), ["0001-tls.eml", "0002-tls.eml"])
        self.assertEqual(hop_b.stored(), ["0001-tls.eml", "0002-tls.eml"])
        for hop in (hop_a, hop_b):  # one connection each: the proxy's EHLO before and in TLS
            hellos = [l for l in hop.proc.log().splitlines() if l.startswith("hello ")]
            self.assertEqual(hellos, ["hello EHLO mx.example.test tls=False",
                                      "hello EHLO mx.example.test tls=True"])
        self.assertEqual(p.stop(), 0)
        reused = [l for l in p.log().splitlines() if "connection=reused" in l]
        self.assertEqual(len(reused), 2, p.log())
        self.assertIn("next_hop=127.0.0.1:%d " % self.hop_port, reused[0])
        self.assertIn("next_hop=127.0.0.1:%d " % other, reused[1])

    def test_redirected_ipv6_connection_is_secured(self):
        r = self.ns_run(["ip", "-6", "addr", "add", V6_CLIENT + "/128", "dev", "lo", "nodad"],
                        check=False)
        if r.returncode != 0:
            self.skipTest("original-dst: kernel refused an IPv6 address in the namespace: %s"
                          % r.stderr.decode().strip())
        self.redirect("ip6", V6_CLIENT)
        hop = NextHop(self.tmp, "good", port=self.hop_port, host="::1")
        self.addCleanup(hop.stop)
        p = self.proxy("[::1]:%d" % self.proxy_port, "::1/128, fd00:5c::/64")

        self.assertEqual(self.client("::1", self.hop_port, V6_CLIENT), "delivered")
        self.assertEqual([f[-8:] for f in hop.stored()], ["-tls.eml"])
        got = self.client("::1", self.proxy_port, "::1")
        self.assertTrue(got.startswith("refused 421") or got.startswith("disconnected"), got)
        self.assertEqual(p.stop(), 0)
        log = p.log()
        self.assertIn("next_hop=[::1]:%d" % self.hop_port, log)
        self.assertRegex(log, r"client=\[?fd00:5c::2\]?:\d+ .*next_hop=\[::1\]:%d .*"
                         r"verify=ok decision=tls" % self.hop_port)
        self.assertIn("result=no-original-dst", log)
