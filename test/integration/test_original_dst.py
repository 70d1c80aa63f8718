"""route = original-dst: a legacy MTA's connection redirected by nftables.

Runs in a private network namespace: the legacy client connects from
127.0.0.2 to the next hop's port, an nftables REDIRECT sends it to the
proxy, and the proxy reads the original destination (SO_ORIGINAL_DST) and
secures that. The proxy's own connection (from 127.0.0.1) is exempt from the
rule by its source address; on a real host the exemption is a socket-owner
or mark match (see README).
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
    s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=15, source_address=(sys.argv[2], 0))
    s.ehlo("legacy.example")
    s.sendmail("a@example.test", ["b@example.test"], b"Subject: redirected\r\n\r\nbody\r\n")
    s.quit()
    print("delivered")
except smtplib.SMTPResponseException as e:
    print("refused %d %s" % (e.smtp_code, e.smtp_error.decode()))
except smtplib.SMTPServerDisconnected as e:
    print("disconnected %s" % e)
"""


class OriginalDst(unittest.TestCase):
    def setUp(self):
        self.ns = "stp-it-%d" % os.getpid()
        if os.geteuid() != 0:
            self.skipTest("original-dst: needs root for a network namespace")
        r = subprocess.run(["ip", "netns", "add", self.ns], capture_output=True)
        if r.returncode != 0:
            self.skipTest("original-dst: kernel refused a network namespace: %s" % r.stderr)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"],
                       check=True)
        self.hop_port, self.proxy_port = free_port(), free_port()
        rules = ("table ip stp {\n chain out {\n  type nat hook output priority -100;\n"
                 "  ip saddr 127.0.0.2 tcp dport %d redirect to :%d\n }\n}\n"
                 % (self.hop_port, self.proxy_port))
        r = subprocess.run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"],
                           input=rules.encode(), capture_output=True)
        if r.returncode != 0:
            self.skipTest("original-dst: nftables REDIRECT refused: %s" % r.stderr)
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        harness.PREFIX = ["ip", "netns", "exec", self.ns]
        self.addCleanup(setattr, harness, "PREFIX", [])

    def client(self, port, source):
        out = subprocess.run(["ip", "netns", "exec", self.ns, harness.PY, "-c", CLIENT,
                              str(port), source], capture_output=True, timeout=30)
        return out.stdout.decode().strip()

    def test_redirected_connection_is_secured(self):
        hop = NextHop.__new__(NextHop)
        # the next hop must listen on the port the rule matches
        harness.free_port_orig = harness.free_port
        harness.free_port = lambda: self.hop_port
        try:
            hop = NextHop(self.tmp, "good")
        finally:
            harness.free_port = harness.free_port_orig
        self.addCleanup(hop.stop)
        harness.free_port = lambda: self.proxy_port
        try:
            p = Proxy(self.tmp, {"out": {
                "mode": "outbound", "route": "original-dst", "tls": "verify",
                "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem"),
                "allow": "127.0.0.0/8"}}, tls=False)
        finally:
            harness.free_port = harness.free_port_orig
        self.addCleanup(p.stop)

        self.assertEqual(self.client(self.hop_port, "127.0.0.2"), "delivered")
        self.assertEqual([f[-8:] for f in hop.stored()], ["-tls.eml"])
        # not redirected: the proxy refuses instead of looping to itself
        got = self.client(self.proxy_port, "127.0.0.1")
        self.assertTrue(got.startswith("refused 421") or got.startswith("disconnected"), got)
        self.assertEqual(p.stop(), 0)
        self.assertIn("next_hop=127.0.0.1:%d" % self.hop_port, p.log())
        self.assertIn("result=no-original-dst", p.log())
