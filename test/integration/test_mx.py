"""route = mx: the proxy resolves each recipient domain's MX itself and
secures the next hop per the domain's policy (DANE, MTA-STS, remembered TLS).

Real DNS on loopback: nsd serves example.test signed at test time, unbound
validates it (test/integration/dnsenv.py). Every MX host name maps to its own
127.0.0.x address where a scripted receiving MTA (test/peers/nexthop.py)
listens on the port the proxy is told to use for MX hosts (`mx_port`), with a
certificate made for that host by the test CA. MTA-STS policies come from a
python HTTPS server (test CA certificate for every mta-sts.* name) on the
`mta_sts_port`.

    legacy MTA --> proxy (route = mx) --DNS--> unbound --> nsd (signed zone)
                         |--HTTPS--> mta-sts.DOMAIN (policy)
                         '--SMTP+STARTTLS--> 127.0.0.x:mx_port (per MX host)
"""
import hashlib
import itertools
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest
import urllib.request

import harness
from dnsenv import DnsEnv, Responder
from harness import BIN, CERTS, PY, NEXTHOP, Client, Process, Proxy, free_port, poll, tmpdir

ZERO = "00" * 32

POLICIES = {
    "stsdane.example.test": "mxf.example.test",
    "sts.example.test": "mxg.example.test",
    "sts2.example.test": "mxi.example.test",
    "stsx.example.test": "mxg.example.test",
    "stsr.example.test": ("mxg.example.test", 6),  # max_age 6 s: refreshed after 3 s
    "stsunusable.example.test": "mxl.example.test",
    # mode testing: failures are reported, not acted on (RFC 8461 5)
    "ststest.example.test": ("mxm.example.test", 86400, "testing"),
    "ststestu.example.test": ("mxn.example.test", 86400, "testing"),
    "ststestx.example.test": ("mxg.example.test", 86400, "testing"),
}


def make_cert(tmp, name, sans, ca="ca"):
    """An ECDSA leaf for `sans` signed by the test CA (or by another CA of
    test/certs/gen.sh: ca="dane-int", the intermediate, and the pem then
    holds the leaf and the intermediate: a chain); returns (pem, key)."""
    key, csr, pem, ext = (os.path.join(tmp, name + s) for s in (".key", ".csr", ".pem", ".cnf"))
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                % ",".join("DNS:" + s for s in sans))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=" + sans[0], "-keyout", key, "-out", csr],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(CERTS, ca + ".pem"),
                    "-CAkey", os.path.join(CERTS, ca + ".key"), "-set_serial",
                    str(random.randrange(1, 1 << 60)), "-days", "30", "-extfile", ext,
                    "-out", pem], check=True, capture_output=True)
    if ca != "ca":
        with open(pem, "a") as out, open(os.path.join(CERTS, ca + ".pem")) as inter:
            out.write(inter.read())
    return pem, key


def spki_sha256(pem):
    """The TLSA 3 1 1 association data of a certificate."""
    pub = subprocess.run(["openssl", "x509", "-in", pem, "-pubkey", "-noout"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                         capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


class Hop:
    """test/peers/nexthop.py on 127.0.0.x:port with a certificate."""

    serial = itertools.count()

    def __init__(self, tmp, ip, port, cert, mode="good", greet_delay=0):
        self.maildir = os.path.join(tmp, "hop-%s-%s-%d" % (ip, mode, next(Hop.serial)))
        self.proc = Process([PY, NEXTHOP, "--listen", "%s:%d" % (ip, port), "--maildir",
                             self.maildir, "--cert", cert[0], "--key", cert[1], "--mode", mode,
                             "--greet-delay", str(greet_delay)],
                            self.maildir + ".log")
        self.proc.wait_ready("nexthop")

    def stored(self):
        return sorted(os.listdir(self.maildir)) if os.path.isdir(self.maildir) else []

    def commands(self):
        return [l for l in self.proc.log().splitlines() if l.startswith("command ")]

    def stop(self):
        self.proc.stop()


class PolicyServer:
    """HTTPS on 127.0.0.1 (or `host`, "::1" too): the MTA-STS policy of the
    domain named by Host. `delay` (seconds, settable at any time) holds each
    answer back; `requests` counts the policy requests per domain."""

    def __init__(self, tmp, policies, host="127.0.0.1", port=None):
        cert = make_cert(tmp, "mta-sts-%s" % host.replace(":", "_"),
                         ["mta-sts." + d for d in policies])
        pol = policies
        self.delay = 0
        self.requests = {}
        server = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
                dom = host[len("mta-sts."):]
                server.requests[dom] = server.requests.get(dom, 0) + 1
                if server.delay:
                    time.sleep(server.delay)
                if self.path != "/.well-known/mta-sts.txt" or dom not in pol:
                    self.send_error(404)
                    return
                mx, age, mode = (pol[dom] + ("enforce",))[:3] if isinstance(pol[dom], tuple) \
                    else (pol[dom], 86400, "enforce")
                body = ("version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: %d\r\n"
                        % (mode, mx, age)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self.port = port or free_port()
        self.httpd = Server((host, self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def zone(dane_hash, ta_hash=ZERO):
    return [
        "d1 IN MX 10 mxa", "mxa IN A 127.0.0.11",
        "d2 IN MX 10 mxdown", "d2 IN MX 20 mxb", "mxdown IN A 127.0.0.12",
        "mxb IN A 127.0.0.13",
        "dane IN MX 10 mxd", "mxd IN A 127.0.0.14", "_25._tcp.mxd IN TLSA 3 1 1 " + dane_hash,
        "danebad IN MX 10 mxe", "mxe IN A 127.0.0.15", "_25._tcp.mxe IN TLSA 3 1 1 " + ZERO,
        # the same DANE failure beside an MX host that is down, before and after it
        "danemix1 IN MX 10 mxdown", "danemix1 IN MX 20 mxe",
        "danemix2 IN MX 10 mxe", "danemix2 IN MX 20 mxdown",
        "stsdane IN MX 10 mxf", "mxf IN A 127.0.0.16", "_25._tcp.mxf IN TLSA 3 1 1 " + ZERO,
        '_mta-sts.stsdane IN TXT "v=STSv1; id=1"', "mta-sts.stsdane IN A 127.0.0.1",
        "sts IN MX 10 mxg", "mxg IN A 127.0.0.17",
        '_mta-sts.sts IN TXT "v=STSv1; id=1"', "mta-sts.sts IN A 127.0.0.1",
        "rem IN MX 10 mxh", "mxh IN A 127.0.0.18",
        "sts2 IN MX 10 mxi", "mxi IN A 127.0.0.19",
        '_mta-sts.sts2 IN TXT "v=STSv1; id=7"', "mta-sts.sts2 IN A 127.0.0.1",
        # MX mxa, but the policy names only mxg
        "stsx IN MX 10 mxa", '_mta-sts.stsx IN TXT "v=STSv1; id=3"',
        "mta-sts.stsx IN A 127.0.0.1",
        "stsr IN MX 10 mxg", '_mta-sts.stsr IN TXT "v=STSv1; id=5"', "mta-sts.stsr IN A 127.0.0.1",
        # validated TLSA records, all unusable for SMTP (PKIX-EE, RFC 7672 3.1.3)
        "daneunusable IN MX 10 mxj", "mxj IN A 127.0.0.20",
        "_25._tcp.mxj IN TLSA 1 1 1 " + ZERO,
        # the same beside an MTA-STS enforce policy naming the MX
        "stsunusable IN MX 10 mxl", "mxl IN A 127.0.0.22",
        "_25._tcp.mxl IN TLSA 0 0 1 " + ZERO, "_25._tcp.mxl IN TLSA 1 1 1 " + ZERO,
        '_mta-sts.stsunusable IN TXT "v=STSv1; id=1"', "mta-sts.stsunusable IN A 127.0.0.1",
        # MTA-STS policies in mode testing: plain; beside unusable TLSA
        # records; naming an MX (mxg) that is not the domain's (mxa)
        "ststest IN MX 10 mxm", "mxm IN A 127.0.0.23",
        '_mta-sts.ststest IN TXT "v=STSv1; id=1"', "mta-sts.ststest IN A 127.0.0.1",
        "ststestu IN MX 10 mxn", "mxn IN A 127.0.0.24", "_25._tcp.mxn IN TLSA 1 1 1 " + ZERO,
        '_mta-sts.ststestu IN TXT "v=STSv1; id=1"', "mta-sts.ststestu IN A 127.0.0.1",
        "ststestx IN MX 10 mxa",
        '_mta-sts.ststestx IN TXT "v=STSv1; id=1"', "mta-sts.ststestx IN A 127.0.0.1",
        # a DANE MX host whose A validates and whose AAAA is bogus (TAMPER)
        "dane6 IN MX 10 mxv", "mxv IN A 127.0.0.25", "mxv IN AAAA ::1",
        "_25._tcp.mxv IN TLSA 3 1 1 " + dane_hash,
        # DANE-TA(2): the intermediate of test/certs/gen.sh as trust anchor
        "danetad IN MX 10 mxt", "mxt IN A 127.0.0.26", "_25._tcp.mxt IN TLSA 2 1 1 " + ta_hash,
        # MX hosts that are (secure) CNAMEs to a provider's hosts, whose TLSA
        # records are at the expanded name only (RFC 7672 2.2.2): the right
        # key, a wrong one; and TLSA only at the name the MX record lists
        "danecn IN MX 10 mxc", "mxc IN CNAME mxp", "mxp IN A 127.0.0.27",
        "_25._tcp.mxp IN TLSA 3 1 1 " + dane_hash,
        "danecnbad IN MX 10 mxc2", "mxc2 IN CNAME mxq", "mxq IN A 127.0.0.28",
        "_25._tcp.mxq IN TLSA 3 1 1 " + ZERO,
        "danecno IN MX 10 mxo", "mxo IN CNAME mxr", "mxr IN A 127.0.0.29",
        "_25._tcp.mxo IN TLSA 3 1 1 " + dane_hash,
        "danecnta IN MX 10 mxct", "mxct IN CNAME mxu", "mxu IN A 127.0.0.30",
        "_25._tcp.mxu IN TLSA 2 1 1 " + ta_hash,
        # tls = secure: an MX host whose name ends in the recipient domain
        # without being below it (mxa vs a.example.test), and one below it
        "a IN MX 10 mxa", "sec IN MX 10 mx.sec", "mx.sec IN A 127.0.0.31",
        # MX hosts whose own CNAME validates while the expansion is in the
        # unsigned insecure.test (INSECURE): TLSA at the name the MX record
        # lists only (RFC 7672 2.2.2): the right key, a wrong one, DANE-TA
        "danepart IN MX 10 mxpc", "mxpc IN CNAME mxpz.insecure.test.",
        "_25._tcp.mxpc IN TLSA 3 1 1 " + dane_hash,
        "danepartbad IN MX 10 mxpc2", "mxpc2 IN CNAME mxpz2.insecure.test.",
        "_25._tcp.mxpc2 IN TLSA 3 1 1 " + ZERO,
        "danepartta IN MX 10 mxpct", "mxpct IN CNAME mxpz3.insecure.test.",
        "_25._tcp.mxpct IN TLSA 2 1 1 " + ta_hash,
        # an MX host in the unsigned zone that is a CNAME there: no DANE
        "danecninsec IN MX 10 cn.insecure.test.",
        # an _mta-sts record whose policy cannot be fetched: the policy
        # server has no policy for it (404); no address for its policy host
        "stsnopol IN MX 10 mxa", '_mta-sts.stsnopol IN TXT "v=STSv1; id=1"',
        "mta-sts.stsnopol IN A 127.0.0.1",
        "stsnoaddr IN MX 10 mxa", '_mta-sts.stsnoaddr IN TXT "v=STSv1; id=1"',
        # MX hosts without addresses: the only one; the first of two
        "badmx IN MX 10 nohost", "badmx2 IN MX 10 nohost", "badmx2 IN MX 20 mxa",
        # a next hop behind a message the proxy refuses; one the proxy's
        # writes to fail; one that falls silent; one that closes holding the
        # message back (the legacy MTA's session goes on each time)
        "ownref IN MX 10 mxownref", "mxownref IN A 127.0.0.36",
        "wfail IN MX 10 mxwfail", "mxwfail IN A 127.0.0.37",
        "silent IN MX 10 mxsilent", "mxsilent IN A 127.0.0.38",
        "stall IN MX 10 mxstall", "mxstall IN A 127.0.0.39",
    ]


# Records of the policy-lookup and MTA-STS refresh tests (PolicyLookup,
# StsRefresh), on 127.0.0.60-79: a wildcard MX under bank.example.test, which
# has a [policy:.bank.example.test] section in those tests; a domain whose
# MTA-STS policy host answers slowly (its own python server on 127.0.0.62),
# and one whose policy host has two addresses, the first of them down.
ZONE_60 = [
    "*.bank IN MX 10 mxw", "mxw IN A 127.0.0.60",
    "stsslow IN MX 10 mxz", "mxz IN A 127.0.0.63",
    '_mta-sts.stsslow IN TXT "v=STSv1; id=1"', "mta-sts.stsslow IN A 127.0.0.62",
    # nothing listens on 127.0.0.61: the first address refuses, ::1 serves
    "stsmulti IN MX 10 mxy", "mxy IN A 127.0.0.65",
    '_mta-sts.stsmulti IN TXT "v=STSv1; id=1"', "mta-sts.stsmulti IN A 127.0.0.61",
    "mta-sts.stsmulti IN AAAA ::1",
]


# unsigned: the ends of the CNAMEs above; TLSA records here are never trusted
INSECURE = ["mxpz IN A 127.0.0.32", "mxpz2 IN A 127.0.0.33", "mxpz3 IN A 127.0.0.34",
            "_25._tcp.mxpz3 IN TLSA 3 1 1 " + ZERO,
            "cn IN CNAME mxpz2", "_25._tcp.cn IN TLSA 3 1 1 " + ZERO]


# records changed after signing (dnsenv `tamper`): bogus, SERVFAIL
TAMPER = ["mxv.example.test AAAA"]


# A secure MX and address, but a TLSA record changed after signing (dnsenv
# tampers with every TLSA record of bogus.test): its lookup fails (bogus).
BOGUS_TLSA = ["tlsafail IN MX 10 mxk", "mxk IN A 127.0.0.21",
              "_25._tcp.mxk IN TLSA 3 1 1 " + "0123456789abcdef" * 4,
              # the same host behind a CNAME: the bogus TLSA is at the expanded name
              "tlsacn IN MX 10 mxkc", "mxkc IN CNAME mxk"]


def send(port, rcpts, body=b"Subject: mx\r\n\r\nbody\r\n", sender="a@legacy.example",
         client=None):
    """One transaction; returns {"rcpt": [(code, line)], "data": (code, line) or None}."""
    c = client or Client(port, timeout=60)
    out = {"rcpt": [], "data": None}
    try:
        if client is None:
            assert c.reply()[0] == 220
            code, lines = c.cmd("EHLO legacy.example")
            assert code == 250, lines
            caps = " ".join(lines)
            assert "STARTTLS" not in caps and "PIPELINING" not in caps, caps
        code, lines = c.cmd("MAIL FROM:<%s>" % sender)
        assert code == 250, lines
        for r in rcpts:
            code, lines = c.cmd("RCPT TO:<%s>" % r)
            out["rcpt"].append((code, lines[-1]))
        code, lines = c.cmd("DATA")
        if code != 354:
            out["data"] = (code, lines[-1])
            return out
        c.send(body + b".\r\n")
        code, lines = c.reply()
        out["data"] = (code, lines[-1])
        return out
    finally:
        if client is None:
            c.close()


class MxBase(unittest.TestCase):
    timeout = 120

    def setUp(self):
        # run.py runs each test on its own: every test has its own DNS and HTTPS
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.hops = []
        self.proxy = None
        self.certs = {h: make_cert(self.tmp, h, [h + ".example.test"])
                      for h in ("mxa", "mxb", "mxd", "mxe", "mxf", "mxg", "mxh", "mxi", "mxj",
                                "mxl", "mxm", "mxn", "nomx")}
        self.other = (os.path.join(CERTS, "other.pem"), os.path.join(CERTS, "other.key"))
        self.dns = DnsEnv(self.tmp, extra={"example.test": zone(
            spki_sha256(self.other[0]), spki_sha256(os.path.join(CERTS, "dane-int.pem")))
                                           + ZONE_60,
                                           "bogus.test": BOGUS_TLSA, "insecure.test": INSECURE},
                           tamper=TAMPER)
        self.addCleanup(self.dns.stop)
        self.https = PolicyServer(self.tmp, POLICIES)
        self.addCleanup(self.https.stop)
        self.mx_port = free_port()
        self.state = os.path.join(self.tmp, "state")
        os.makedirs(self.state, exist_ok=True)

    def tearDown(self):
        for h in self.hops:
            h.stop()
        if self.proxy:
            rc = self.proxy.stop()
            self.assertEqual(rc, 0, "proxy exit status (ASan?): " + self.proxy.log()[-3000:])

    def hop(self, ip, host, mode="good", cert=None, greet_delay=0):
        if cert is None and host not in self.certs:  # made when a test needs it
            self.certs[host] = make_cert(self.tmp, host, [host + ".example.test"])
        h = Hop(self.tmp, ip, self.mx_port, cert or self.certs[host], mode, greet_delay)
        self.hops.append(h)
        return h

    def start_proxy(self, resolver=None, policies="", remember="30d", metrics=None,
                    listener=None, proxy_extra=None, env=None):
        extra = {"metrics": "127.0.0.1:%d" % metrics} if metrics else {}
        extra.update({"resolver": resolver or self.dns.resolver, "mx_port": self.mx_port,
                 "mta_sts_port": self.https.port,
                 "mta_sts_ca_file": os.path.join(CERTS, "ca.pem"), "state_dir": self.state,
                 "remember_tls": remember, "dns_timeout": "5s", "log_level": "debug",
                 "dnssec_probe": "example.test"})
        extra.update(proxy_extra or {})
        self.proxy = Proxy(self.tmp, {"out": dict({"mode": "outbound", "route": "mx",
                                                   "connect_timeout": "3s"}, **(listener or {}))},
                           proxy_extra=extra, tls_extra={"ca_file": os.path.join(CERTS, "ca.pem")},
                           extra_text=policies, env=env)
        return self.proxy.port("out")

    def legacy_client(self, port, timeout):
        """A client (the legacy MTA) past the greeting and its EHLO."""
        c = Client(port, timeout=timeout)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO legacy.example")[0], 250)
        return c

    def decisions(self):
        return [l for l in self.proxy.log().splitlines() if " mx_decision " in l]

    def assert_would_refuse(self, *parts):
        """Under `testing = yes`: a decision logged what enforcement would
        have refused (every one of parts in its would_refuse)."""
        lines = [l for l in self.decisions() if "outcome=testing-override" in l and
                 all(p in l.split("would_refuse=", 1)[-1] for p in parts)]
        self.assertTrue(lines, self.decisions())


class Routing(MxBase):
    def test_failed_handshake_defers_when_tls_is_required(self):
        h = self.hop("127.0.0.11", "mxa", mode="tls10")  # below the TLS 1.2 floor
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = encrypt\n")
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])

    def test_failed_handshake_retries_in_plaintext_under_testing(self):
        h = self.hop("127.0.0.11", "mxa", mode="tls10")
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = encrypt\n",
                                listener={"testing": "yes"})
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(h.stored()[0].endswith("-plain.eml"), h.stored())
        self.assert_would_refuse()
        self.assertIn("retry=plaintext", self.proxy.log())

    def test_injection_under_may_retries_in_plaintext(self):
        # opportunistic TLS: the injected bytes go with the connection and the
        # message goes once more in plaintext, as after a failed handshake
        # (route = relay does the same)
        h = self.hop("127.0.0.11", "mxa", mode="inject")
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = may\n")
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(h.stored()[0].endswith("-plain.eml"), h.stored())
        self.assertIn("retry=plaintext", self.proxy.log())

    def test_injection_is_refused_even_under_testing(self):
        # bytes behind the 220 to STARTTLS: no plaintext way is left
        h = self.hop("127.0.0.11", "mxa", mode="inject")
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = encrypt\n",
                                listener={"testing": "yes"})
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertNotIn("testing-override", self.proxy.log())

    def test_stalled_handshake_is_a_policy_deferral_when_tls_is_required(self):
        # a handshake that never completes where TLS is required is the
        # policy's refusal (4.7.5, counted as a downgrade), not a timeout
        h = self.hop("127.0.0.11", "mxa", mode="stall-in-handshake")
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = encrypt\n",
                                listener={"handshake_timeout": "1s"})
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5 TLS handshake with mxa.example.test timed out", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_plain_delivery_via_mx(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["rcpt"][0][0], 250, r)
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(h.stored()[0].endswith("-tls.eml"), h.stored())
        self.assertIn("command MAIL FROM:<a@legacy.example> tls=True", h.commands())
        self.assertIn("command RCPT TO:<bob@d1.example.test> tls=True", h.commands())
        d = self.decisions()
        self.assertTrue(any("domain=d1.example.test" in l and "outcome=tls_verified" in l
                            for l in d), d)

    def test_mail_from_too_long_to_replay_refused_at_mail(self):
        # A MAIL FROM that fits the command line (max_line_length 2048) but
        # not the line replayed to a next hop is refused at MAIL, not as the
        # answer to the first RCPT; a long one that fits is delivered.
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        c = self.legacy_client(port, 60)
        long_sender = "a" * 1300 + "@legacy.example"
        self.assertEqual(c.cmd("MAIL FROM:<%s> SIZE=100" % long_sender),
                         (501, ["501 5.5.4 Error: MAIL FROM too long"]))
        r = send(port, ["bob@d1.example.test"], sender="a" * 1100 + "@legacy.example", client=c)
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)

    def test_next_hop_without_esmtp(self):
        # An MX that refuses EHLO (502) speaks SMTP without extensions, so
        # without STARTTLS: where plaintext is allowed the proxy says HELO
        # and delivers; where TLS is required, TLS was not offered (4.7.4).
        h = self.hop("127.0.0.11", "mxa", mode="helo-only")
        for n, level in enumerate(("none", "may", "encrypt", "verify"), 1):
            port = self.start_proxy(policies="[policy:d1.example.test]\ntls = %s\n" % level)
            r = send(port, ["bob@d1.example.test"])
            if level in ("none", "may"):
                self.assertEqual(r["data"][0], 250, (level, r))
                self.assertEqual(len(h.stored()), n, level)
                self.assertTrue(h.stored()[-1].endswith("-plain.eml"), h.stored())
                self.assertIn("hello HELO mx.example.test tls=False", h.proc.log())
                self.assertTrue(any("policy=%s" % level in l and "outcome=plaintext" in l
                                    for l in self.decisions()), self.decisions())
            else:
                self.assertEqual(r["rcpt"][0][0], 451, (level, r))
                self.assertTrue(r["rcpt"][0][1].startswith(
                    "451 4.7.4 TLS is required, but was not offered by host mxa.example.test"), r)
                self.assertEqual(len(h.stored()), 2, level)
            self.assertEqual(self.proxy.stop(), 0)
            self.proxy = None
        self.assertEqual([l for l in h.commands() if "MAIL" in l],
                         ["command MAIL FROM:<a@legacy.example> tls=False"] * 2)

    def test_mx_preference_first_down(self):
        h = self.hop("127.0.0.13", "mxb")  # 127.0.0.12 (preference 10) has nobody
        port = self.start_proxy()
        r = send(port, ["bob@d2.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertIn("mx=mxdown.example.test", self.proxy.log())
        self.assertTrue(any("mx=mxb.example.test" in l for l in self.decisions()))

    def test_null_mx(self):
        port = self.start_proxy()
        r = send(port, ["bob@nullmx.example.test"])
        self.assertEqual(r["rcpt"][0][0], 556, r)
        self.assertIn("5.1.10", r["rcpt"][0][1])
        self.assertEqual(r["data"][0], 554, r)

    def test_dns_failure_defers_4_4_3(self):
        # bogus.test's signatures do not validate: unbound answers SERVFAIL
        port = self.start_proxy()
        r = send(port, ["bob@bogus.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.4.3", r["rcpt"][0][1])
        self.assertEqual(r["data"][0], 554, r)  # no recipient: nothing to send

    def test_every_mx_down_defers_4_4_1(self):
        port = self.start_proxy()
        r = send(port, ["bob@d2.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.4.1", r["rcpt"][0][1])

    def test_next_hop_breaks_right_after_its_ehlo_reply(self):
        # The EHLO reply after TLS arrives with a bogus TLS record (or an
        # unasked reply) behind it in one read: the connection is not handed
        # to the session after all; the RCPT is deferred and the session
        # still ends normally (its log line is written when it is freed).
        for n, mode in enumerate(("garbage-after-ehlo", "data-after-ehlo"), 1):
            h = self.hop("127.0.0.11", "mxa", mode=mode)
            if self.proxy is None:
                port = self.start_proxy()
            r = send(port, ["bob@d1.example.test"])
            self.assertEqual(r["rcpt"][0][0], 451, (mode, r))
            self.assertIn("4.4.2", r["rcpt"][0][1])
            self.assertEqual(h.stored(), [])
            self.assertTrue(poll(lambda: self.proxy.log().count(" session id=") == n, 10),
                            (mode, self.proxy.log()[-3000:]))
            h.stop()
            self.hops.remove(h)

    def test_next_hop_idle_421_between_transactions(self):
        # The next hop says 421 on its own and closes while the legacy MTA
        # is between transactions: nobody's command is answered by it, the
        # session goes on, and the next message reconnects.
        h = self.hop("127.0.0.11", "mxa", mode="idle-421")
        port = self.start_proxy()
        c = self.legacy_client(port, 20)
        for n in (1, 2):
            r = send(port, ["bob@d1.example.test"], client=c)
            self.assertEqual(r["data"][0], 250, (n, r))
            self.assertTrue(c.silent(0.8))  # the next hop's 421 is not the legacy MTA's
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(h.stored()), 2)
        self.assertIn("closing=421", self.proxy.log())

    def test_next_hop_421_to_mail_is_not_relayed(self):
        # The next hop refuses the replayed MAIL with 421 and closes: the
        # RCPT gets 451 4.4.2 (a relayed 421 would end the legacy MTA's
        # whole session), the session goes on; the next RCPT gets the same
        # answer (from a new attempt, or at once: one per domain and
        # transaction).
        self.hop("127.0.0.11", "mxa", mode="mail-421")
        port = self.start_proxy()
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        for n in (1, 2):
            code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
            self.assertEqual(code, 451, (n, lines))
            self.assertTrue(lines[0].startswith("451 4.4.2 "), lines)
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertIn('mail_reply="421 4.3.2 nexthop.example.test Service shutting down"',
                      self.proxy.log())

    def test_out_of_descriptors_is_4_3_2(self):
        # No descriptor for the connection to the MX (test/fault's shim fails
        # the proxy's new TCP sockets while the file exists): the RCPT gets
        # 451 4.3.2, the proxy's own shortage, where it got 451 4.4.1 (no MX
        # host reachable); once descriptors are back, the mail goes.
        flag = os.path.join(self.tmp, "out-of-descriptors")
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy(env=harness.fault_env(socket_flag=flag))
        open(flag, "w").close()
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertTrue(r["rcpt"][0][1].startswith(
            "451 4.3.2 too many open files in the proxy, try again later"), r)
        self.assertEqual(h.commands(), [])
        os.unlink(flag)
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)

    def test_next_hop_out_of_step_is_dropped(self):
        # A next hop out of step with the commands: 354 to the replayed MAIL,
        # to RCPT or to the final dot, 250 to DATA. The command gets 451
        # 4.4.2, the connection is dropped (none of its later replies can be
        # trusted) and the legacy MTA's session goes on. The reply used to
        # reach the legacy MTA as its own command's (a 354 to its RCPT, a 250
        # to its DATA).
        lost = "451 4.4.2 Error: connection to the recipient's mail server lost"
        for mode, at, logged in (("mail-354", "rcpt", "mail_reply=\"354 "),
                                 ("rcpt-354", "rcpt", "command=RCPT reply=\"354 "),
                                 ("data-250", "data", "command=DATA reply=\"250 "),
                                 ("dot-354", "dot", "command=end-of-data reply=\"354 ")):
            h = self.hop("127.0.0.11", "mxa", mode=mode)
            port = self.start_proxy()
            c = self.legacy_client(port, 20)
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
            if at != "rcpt":
                self.assertEqual(code, 250, (mode, lines))
                code, lines = c.cmd("DATA")
            if at == "dot":
                self.assertEqual(code, 354, (mode, lines))
                c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
                code, lines = c.reply()
            self.assertEqual(code, 451, (mode, lines))
            self.assertTrue(lines[-1].startswith(lost), (mode, lines))
            self.assertEqual(c.cmd("RSET")[0], 250, mode)
            self.assertEqual(c.cmd("NOOP")[0], 250, mode)
            self.assertEqual(c.cmd("QUIT")[0], 221, mode)
            self.assertEqual(h.stored(), [], mode)
            self.assertIn(logged, self.proxy.log(), mode)
            self.assertIn("connection=dropped", self.proxy.log(), mode)
            h.stop()
            self.hops.remove(h)
            self.assertEqual(self.proxy.stop(), 0, mode)
            self.proxy = None

    def one_message_past_a_failure(self, h, port, mode, at, closed):
        """One legacy session whose next hop (in `mode`) fails once `at`
        rcpt, rset (the proxy's own, after the legacy MTA's RSET), data or
        dot: that command is answered `closed` (nothing for the proxy's
        RSET), the session goes on, and one message is delivered over a new
        connection."""
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
        if at == "rcpt":
            self.assertEqual((code, lines), (451, [closed]), mode)
            code, lines = c.cmd("RCPT TO:<carol@d1.example.test>")
        self.assertEqual(code, 250, (mode, lines))
        if at == "rset":
            self.assertEqual(c.cmd("RSET")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<carol@d1.example.test>")[0], 250)
        code, lines = c.cmd("DATA")
        if at == "data":
            self.assertEqual((code, lines), (451, [closed]), mode)
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<carol@d1.example.test>")[0], 250)
            code, lines = c.cmd("DATA")
        self.assertEqual(code, 354, (mode, lines))
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        code, lines = c.reply()
        if at == "dot":
            self.assertEqual((code, lines), (451, [closed]), mode)
            self.assertEqual(h.stored(), [], mode)
            r = send(port, ["carol@d1.example.test"], client=c)
            code, lines = r["data"]
        self.assertEqual(code, 250, (mode, lines))
        self.assertEqual(c.cmd("QUIT")[0], 221, mode)
        self.assertEqual(len(h.stored()), 1, mode)

    def test_next_hop_421_to_rcpt_data_or_dot_is_not_relayed(self):
        """The next hop says 421 (and closes) at a RCPT, at DATA, or as its
        answer to the final dot: that command gets 451 4.4.2 (a relayed 421
        would end the legacy MTA's whole session, and its mail for every
        other domain with it); for the dot the message is not accepted and
        logged tempfail; the session goes on and the next RCPT connects
        anew."""
        closed = ("451 4.4.2 Error: the recipient's mail server closed the connection; "
                  "try again later")
        for mode in ("rcpt-421", "data-421", "dot-421"):
            h = self.hop("127.0.0.11", "mxa", mode=mode)
            port = self.start_proxy()
            self.one_message_past_a_failure(h, port, mode, mode.split("-")[0], closed)
            self.assertEqual(h.proc.log().count("hello EHLO legacy"), 0)
            self.assertEqual(len([l for l in h.proc.log().splitlines()
                                  if l.startswith("hello ") and l.endswith("tls=False")]), 2,
                             (mode, h.proc.log()))
            log = self.proxy.log()
            self.assertRegex(log, r"mx id=\S+ domain=d1.example.test next_hop=\S+ command=%s "
                                  r"reply=\"421 4.3.2 nexthop.example.test Service shutting "
                                  r"down\" connection=dropped"
                             % {"rcpt-421": "RCPT", "data-421": "DATA",
                                "dot-421": "end-of-data"}[mode])
            msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")]
            self.assertEqual([(m["result"], m["code"]) for m in msgs],
                             ([("tempfail", "421")] if mode == "dot-421" else [])
                             + [("accepted", "250")], (mode, msgs))
            self.assertEqual(self.proxy.stop(), 0)
            self.proxy = None
            h.stop()
            self.hops.remove(h)

    def test_next_hop_failing_in_the_middle_of_data_keeps_the_session(self):
        """After its 354 and before the final dot the next hop says 421 and
        closes, says 552, or just closes: the legacy MTA's dot gets 451 4.4.2
        (552: the 552, as written), the message is logged tempfail (rejected),
        the next hop's connection is dropped with an mx line saying what it
        said, and the session goes on: the next message connects anew. The 421
        was relayed and the close answered 421, each ending the session (and
        the 552 ended it after the dot; then it had no mx line)."""
        closed = ("451 4.4.2 Error: the recipient's mail server closed the connection; "
                  "try again later")
        expect = {"data-mid-421": ((451, [closed]), ("tempfail", "421"), "reply=\"421 4.3.2 "),
                  "data-mid-552": ((552, ["552 5.3.4 nexthop.example.test Message too big"]),
                                   ("rejected", "552"), "reply=\"552 5.3.4 "),
                  "data-mid-close": ((451, [closed]), ("tempfail", "451"), "reply=none error=")}
        for mode, (reply, logged, mx_line) in expect.items():
            h = self.hop("127.0.0.11", "mxa", mode=mode)
            port = self.start_proxy()
            c = self.legacy_client(port, 20)
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<bob@d1.example.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: x\r\n\r\n")
            # the rest only once the proxy has seen the next hop fail
            if mode == "data-mid-552":  # the proxy lets it go at once
                self.assertTrue(poll(lambda: "data-mid-552 dropped" in h.proc.log()),
                                h.proc.log())
            else:
                self.assertTrue(poll(lambda: " command=message " in self.proxy.log()),
                                self.proxy.log()[-3000:])
            c.send(b"body\r\n.\r\n")
            self.assertEqual(c.reply(), reply, mode)
            r = send(port, ["carol@d1.example.test"], client=c)
            self.assertEqual(r["data"][0], 250, (mode, r))
            self.assertEqual(c.cmd("QUIT")[0], 221, mode)
            self.assertEqual(len(h.stored()), 1, mode)
            self.assertNotIn("data-mid-552 dot", h.proc.log())
            msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")]
            self.assertEqual([(m["result"], m["code"]) for m in msgs],
                             [logged, ("accepted", "250")], (mode, msgs))
            self.assertRegex(self.proxy.log(), r"mx id=\S+ domain=d1.example.test "
                             r"next_hop=\S+ command=message %s" % re.escape(mx_line))
            self.assertEqual(self.proxy.stop(), 0)
            sessions = [harness.log_fields(l) for l in self.proxy.log_lines("session")]
            self.assertEqual([(x["result"], x["messages"], x["rejected"]) for x in sessions],
                             [("ok", "1", "1")], mode)
            self.proxy = None
            h.stop()
            self.hops.remove(h)

    def test_next_hop_closing_with_a_reply_owed_keeps_the_session(self):
        """The next hop closes instead of answering the proxy's own RSET (after
        the legacy MTA's RSET), a RCPT, DATA or the final dot: the command
        gets 451 4.4.2 (the RSET was the proxy's: nothing), for the dot the
        message is logged tempfail, and the legacy MTA's session goes on; the
        next RCPT connects anew. Each ended the session with 421."""
        closed = ("451 4.4.2 Error: the recipient's mail server closed the connection; "
                  "try again later")
        what = {"rset-close": "rset_reply", "rcpt-close": "command=RCPT reply",
                "data-close": "command=DATA reply", "dot-close": "command=end-of-data reply"}
        for mode in ("rset-close", "rcpt-close", "data-close", "dot-close"):
            h = self.hop("127.0.0.11", "mxa", mode=mode)
            port = self.start_proxy()
            self.one_message_past_a_failure(h, port, mode, mode.split("-")[0], closed)
            self.assertRegex(self.proxy.log(), r"mx id=\S+ domain=d1.example.test next_hop=\S+ "
                             r"%s=none error=\"[^\"]+\" connection=dropped" % what[mode])
            msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")]
            self.assertEqual([(m["result"], m["code"]) for m in msgs],
                             ([("tempfail", "451")] if mode == "dot-close" else [])
                             + [("accepted", "250")], (mode, msgs))
            self.assertEqual(self.proxy.stop(), 0)
            sessions = [harness.log_fields(l) for l in self.proxy.log_lines("session")]
            self.assertEqual([x["result"] for x in sessions], ["ok"], mode)
            self.proxy = None
            h.stop()
            self.hops.remove(h)

    def test_message_the_proxy_refuses_keeps_the_session(self):
        """The proxy refuses a message itself after its DATA: a bare LF in it
        (554 5.6.0), or over max_message_size (552 5.3.4). It is read to its
        final dot and the next hop's connection is dropped without the dot
        (the next hop stores nothing; an mx line says so), and the legacy
        MTA's session goes on: its next message to the domain is delivered
        over a new connection. Each ended the session (and kept back every
        other message of it)."""
        h = self.hop("127.0.0.36", "mxownref")
        port = self.start_proxy(listener={"max_message_size": "20000"})
        c = self.legacy_client(port, 20)
        refused = ((b"Subject: bare\r\n\r\na bare\nLF\r\n", "554 5.6.0 "),
                   (b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 400, "552 5.3.4 "))
        for n, (body, want) in enumerate(refused, 1):
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<bob%d@ownref.example.test>" % n)[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(body + b".\r\n")
            code, lines = c.reply()
            self.assertTrue(lines[0].startswith(want), (n, lines))
            r = send(port, ["carol%d@ownref.example.test" % n], client=c)
            self.assertEqual(r["data"][0], 250, (n, r))
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(h.stored()), 2, h.stored())
        for name in h.stored():
            with open(os.path.join(h.maildir, name), "rb") as f:
                got = f.read()
            self.assertNotIn(b"bare", got)
            self.assertNotIn(b"zzzz", got)
        # three connections: each refusal dropped the one it was on
        self.assertEqual(h.proc.log().count("hello EHLO mx.example.test tls=False"), 3,
                         h.proc.log())
        msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")
                if " message id=" in l]  # not the mx lines quoting a refusal
        self.assertEqual([m["result"] for m in msgs],
                         ["refused", "accepted", "refused", "accepted"], msgs)
        dropped = re.findall(r"mx id=\S+ domain=ownref.example.test next_hop=\S+ command=message "
                             r"proxy_reply=\"(\d{3} \d\.\d\.\d) [^\"]*\" connection=dropped",
                             self.proxy.log())
        self.assertEqual(dropped, ["554 5.6.0", "552 5.3.4"], self.proxy.log()[-3000:])
        self.assertEqual(self.proxy.stop(), 0)
        f = harness.log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["result"], f["messages"], f["rejected"]), ("ok", "2", "2"), f)

    def test_failed_write_to_the_next_hop_keeps_the_session(self):
        """The proxy's own write to the next hop fails in the call (a TLS
        engine that broke, memory that ran out; here test/fault's shim fails
        SSL_write on a text): as if the next hop had closed, the connection
        is dropped, what it owed gets 451 4.4.2 and the legacy MTA's session
        goes on, the next RCPT connecting anew. The write of the replayed
        MAIL (its RCPT gets the 451), of a RCPT, of a short message (with
        its dot, in one read) and of a long one's content (its dot gets the
        451). Each ended the session with 421."""
        lost = "451 4.4.2 Error: connection to the recipient's mail server lost; try again later"
        h = self.hop("127.0.0.37", "mxwfail")
        port = self.start_proxy(env=harness.fault_env("write-fails-here"))
        c = self.legacy_client(port, 20)
        # the replayed MAIL, then a RCPT
        for sender, rcpt in (("write-fails-here@legacy.example", "bob@wfail.example.test"),
                             ("a@legacy.example", "write-fails-here@wfail.example.test")):
            self.assertEqual(c.cmd("MAIL FROM:<%s>" % sender)[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt), (451, [lost]), (sender, rcpt))
            self.assertEqual(c.cmd("RSET")[0], 250)
            r = send(port, ["carol@wfail.example.test"], client=c)
            self.assertEqual(r["data"][0], 250, r)
        # a short message, its dot in the same read: the dot gets the 451
        r = send(port, ["dave@wfail.example.test"], body=b"Subject: x\r\n\r\nwrite-fails-here\r\n",
                 client=c)
        self.assertEqual(r["data"], (451, lost), r)
        self.assertEqual(send(port, ["erin@wfail.example.test"], client=c)["data"][0], 250)
        # 40 KB of a message (more than the proxy gathers for one write), the
        # dot only once the proxy has given up the next hop
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<frank@wfail.example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: y\r\n\r\nwrite-fails-here\r\n" + (b"y" * 78 + b"\r\n") * 500)
        self.assertTrue(poll(lambda: "command=message reply=none" in self.proxy.log()),
                        self.proxy.log()[-3000:])
        c.send(b"more, read and dropped\r\n.\r\n")
        self.assertEqual(c.reply(), (451, [lost]))
        self.assertEqual(send(port, ["erin@wfail.example.test"], client=c)["data"][0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(h.stored()), 4, h.stored())
        log = self.proxy.log()
        self.assertEqual(re.findall(r"mx id=\S+ domain=wfail.example.test next_hop=\S+ "
                                    r"(\S+(?: reply)?)=none error=\"write to next hop failed\" "
                                    r"connection=dropped", log),
                         ["mail_reply", "command=RCPT reply", "command=end-of-data reply",
                          "command=message reply"], log[-3000:])
        msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")]
        self.assertEqual([(m["result"], m["code"]) for m in msgs],
                         [("accepted", "250")] * 2 + [("tempfail", "451"), ("accepted", "250")] * 2,
                         msgs)
        self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-3000:])
        f = harness.log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["result"], f["messages"], f["rejected"]), ("ok", "4", "2"), f)

    def test_silent_next_hop_keeps_the_session(self):
        """The next hop stops answering (here the proxy's own RSET, after the
        legacy MTA's RSET) for command_timeout: its connection is dropped as
        if it had closed (the proxy's RSET owes nobody a reply; a command's
        would be 451 4.4.2), and the legacy MTA's session goes on, its next
        RCPT connecting anew. The timeout ended the session with 421."""
        h = self.hop("127.0.0.38", "mxsilent", mode="rset-silent")
        port = self.start_proxy(listener={"command_timeout": "2s"})
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bob@silent.example.test>")[0], 250)
        self.assertEqual(c.cmd("RSET")[0], 250)
        # the next command waits for the RSET's reply, then for the timeout
        r = send(port, ["carol@silent.example.test"], client=c)
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(h.stored()), 1)
        self.assertEqual(h.proc.log().count("hello EHLO mx.example.test tls=False"), 2)
        log = self.proxy.log()
        self.assertIn('phase="backend reply"', log)
        self.assertRegex(log, r"mx id=\S+ domain=silent.example.test next_hop=\S+ rset_reply=none "
                              r"error=\"no reply in time\" connection=dropped")
        self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-3000:])
        f = harness.log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["result"], f["messages"]), ("ok", "1"), f)

    def test_next_hop_closing_while_it_holds_the_message_back(self):
        """The next hop reads nothing of a big message (the proxy stops
        reading the legacy MTA once its queue for the next hop is full),
        then closes: the legacy MTA is read again (the rest of its message
        read and dropped), its final dot gets 451 4.4.2, and its session
        goes on. Its reading stayed stopped, and the timer still waiting for
        the next hop, gone, then crashed the proxy (or, without it, the
        legacy MTA waited for its own timeout)."""
        closed = ("451 4.4.2 Error: the recipient's mail server closed the connection; "
                  "try again later")
        h = self.hop("127.0.0.39", "mxstall", mode="data-stall-close")
        port = self.start_proxy(listener={"data_timeout": "5s"})
        c = self.legacy_client(port, 30)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bob@stall.example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        body = b"Subject: big\r\n\r\n" + (b"w" * 78 + b"\r\n") * (8 * 1024 * 1024 // 80)
        sent = []
        t = threading.Thread(target=lambda: (c.sock.sendall(body + b".\r\n"), sent.append(1)),
                             daemon=True)
        t.start()
        t.join(20)
        self.assertTrue(sent, "the legacy MTA's message was never read to its end")
        self.assertEqual(c.reply(), (451, [closed]))
        r = send(port, ["carol@stall.example.test"], client=c)
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertIn("data-stall-close", h.proc.log())
        self.assertEqual(len(h.stored()), 1)
        msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")]
        self.assertEqual([(m["result"], m["code"]) for m in msgs],
                         [("tempfail", "451"), ("accepted", "250")], msgs)
        self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-3000:])

    def test_next_hop_421_connection_is_dropped_at_once(self):
        # After its 421 the next hop keeps the connection open a while (as
        # a server in the middle of shutting down may): the proxy must not
        # send the next RCPT there. It did, and the RCPT then waited for the
        # close, which ended the legacy MTA's session with 421 (seen once in
        # many runs with mail-421, where the close raced the next RCPT).
        hop = self.hop("127.0.0.11", "mxa", mode="mail-421-linger")
        port = self.start_proxy()
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
        self.assertEqual(code, 451, lines)
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        started = time.time()
        code, lines = c.cmd("RCPT TO:<carol@d1.example.test>")
        self.assertEqual(code, 451, lines)
        self.assertTrue(lines[0].startswith("451 4.4.2 "), lines)
        self.assertLess(time.time() - started, 8, "waited for the lingering connection")
        self.assertEqual(hop.proc.log().count("mail-421 MAIL FROM:"), 2, hop.proc.log())
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_half_close_after_the_final_dot_gets_the_acceptance(self):
        # The legacy MTA sends the final dot (alone, or with QUIT behind it),
        # then shutdown(SHUT_WR), and reads on. The MX host stores the
        # message and answers 0.5 s later (slow): its 250 must reach the
        # legacy MTA (and then the 221), or the legacy MTA sends the message
        # again. It got EOF at once, and the log said messages=0.
        h = self.hop("127.0.0.11", "mxa", mode="slow")
        port = self.start_proxy()
        for n, quit in enumerate((False, True), 1):
            c = self.legacy_client(port, 20)
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<bob@d1.example.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: half-close\r\n\r\nbody\r\n.\r\n" + (b"QUIT\r\n" if quit else b""))
            c.sock.shutdown(socket.SHUT_WR)
            code, lines = c.reply()
            self.assertEqual((code, lines), (250, ["250 2.0.0 Ok: queued"]), (quit, lines))
            if quit:
                self.assertEqual(c.reply()[0], 221)
            self.assertTrue(c.closed(), quit)
            self.assertEqual(c.buf, b"", quit)
            self.assertEqual(len(h.stored()), n)
            self.assertTrue(poll(lambda: self.proxy.log().count(" session id=") == n),
                            self.proxy.log()[-3000:])
        lines = self.proxy.log().splitlines()
        msgs = [l for l in lines if " message id=" in l]
        self.assertEqual(len(msgs), 2, msgs)
        self.assertTrue(all("result=accepted code=250" in l for l in msgs), msgs)
        sessions = [l for l in lines if " session id=" in l]
        self.assertTrue(all("messages=1 " in l for l in sessions), sessions)
        self.assertIn("result=client-closed", sessions[0])
        self.assertIn("result=ok", sessions[1])

    def test_half_close_elsewhere_gets_what_is_owed_and_no_more(self):
        # shutdown(SHUT_WR) at other points of a transaction: whatever reply
        # the next hop owes for a command already sent reaches the legacy
        # MTA, then the session ends; nothing is delivered without a dot and
        # no 250 is ever said for mail that was not. (The RCPT's and the
        # DATA's replies were dropped: the session ended at once.)
        slow = self.hop("127.0.0.11", "mxa", mode="slow")
        late = self.hop("127.0.0.13", "mxb", greet_delay=2)  # d2: mxdown refuses, then mxb
        port = self.start_proxy()
        sessions = lambda: self.proxy.log().count(" session id=")

        # during the MX attempt: nothing is owed yet; the attempt is cancelled
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        c.send(b"RCPT TO:<bob@d2.example.test>\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")
        self.assertTrue(poll(lambda: sessions() == 1), self.proxy.log()[-3000:])

        # the RCPT replayed on the connection of the message before it: its
        # reply is the next hop's; the next hop gets QUIT
        c = self.legacy_client(port, 20)
        self.assertEqual(send(port, ["bob@d1.example.test"], client=c)["data"][0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        c.send(b"RCPT TO:<carol@d1.example.test>\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.reply(), (250, ["250 2.0.0 Ok"]))
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")
        self.assertTrue(poll(lambda: sessions() == 2), self.proxy.log()[-3000:])
        self.assertTrue(poll(lambda: slow.proc.log().count("bye ") == 1), slow.proc.log())

        # DATA sent: its 354 is relayed; no content can follow, so the next
        # hop's connection is closed inside DATA and nothing is stored
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<dave@d1.example.test>")[0], 250)
        c.send(b"DATA\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.reply()[0], 354)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")
        self.assertTrue(poll(lambda: sessions() == 3), self.proxy.log()[-3000:])

        # inside DATA, without the final dot: nothing is stored, no reply
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<erin@d1.example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: cut\r\n\r\nno end\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")
        self.assertTrue(poll(lambda: sessions() == 4), self.proxy.log()[-3000:])

        self.assertEqual(len(slow.stored()), 1)  # the one message with its dot
        self.assertEqual(late.commands(), [])
        log = self.proxy.log()
        self.assertEqual(log.count(" message id="), 1, log[-3000:])
        self.assertEqual(log.count("result=client-closed"), 4, log[-3000:])

    def test_next_hop_421_to_the_proxys_rset_reconnects(self):
        # The MX host refuses DATA (554); the proxy's own RSET after it gets
        # 421 and the connection stays open 1 s before it is closed. The
        # next transaction's RCPT goes over a new connection; it was
        # replayed on the closing one and got 421, which ended the legacy
        # MTA's session.
        h = self.hop("127.0.0.11", "mxa", mode="data-554-rset-421")
        port = self.start_proxy()
        c = self.legacy_client(port, 20)
        for n in (1, 2):
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
            self.assertEqual(code, 250, (n, lines))
            code, lines = c.cmd("DATA")
            self.assertEqual(code, 554, (n, lines))
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(h.proc.log().count("hello EHLO mx.example.test tls=False"), 2,
                         h.proc.log())
        self.assertEqual(h.proc.log().count("rset-421 "), 2, h.proc.log())
        self.assertEqual(h.stored(), [])
        self.assertEqual(self.proxy.log().count(
            'rset_reply="421 4.4.2 nexthop.example.test closing connection" connection=dropped'),
            2, self.proxy.log()[-3000:])

    def test_next_hop_refusing_the_proxys_rset_is_not_reused(self):
        # The MX host refuses the proxy's own RSET (502), after a refused
        # DATA and after the legacy MTA's RSET, and keeps the transaction
        # open: the connection is given up (QUIT) and the next RCPT goes over
        # a new one. It was reused, and the RCPT got the next hop's 503 to
        # the replayed MAIL ("nested MAIL command").
        h = self.hop("127.0.0.11", "mxa", mode="data-554-rset-502")
        port = self.start_proxy()
        c = self.legacy_client(port, 20)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bob@d1.example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 554)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        code, lines = c.cmd("RCPT TO:<bob@d1.example.test>")
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        log = h.proc.log()
        self.assertNotIn("nested ", log)
        self.assertEqual(log.count("hello EHLO mx.example.test tls=False"), 3, log)
        self.assertEqual(log.count("rset-502 "), 2, log)
        self.assertTrue(poll(lambda: h.proc.log().count("bye ") == 3), h.proc.log())
        self.assertEqual(self.proxy.log().count('rset_reply="502 5.5.2 Error: command not '
                                                'recognized" connection=dropped'), 2)

    def test_stop_during_a_failing_attempt(self):
        # SIGTERM while an attempt runs: the attempt fails (the MX greets
        # too late), the RCPT gets its 4xx and right behind it the 421 of
        # the stop, without waiting for the legacy MTA's next command.
        self.hop("127.0.0.11", "mxa", greet_delay=3)
        port = self.start_proxy(listener={"greeting_timeout": "1s"})
        c = self.legacy_client(port, 10)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        c.send(b"RCPT TO:<bob@d1.example.test>\r\n")
        # the attempt has begun (logged in the RCPT's callback, before the
        # worker can see the stop)
        self.assertTrue(poll(lambda: any(" mx id=" in l and "domain=d1.example.test policy=" in l
                                         for l in self.proxy.log().splitlines()), 10))
        os.kill(self.proxy.pid, signal.SIGTERM)
        code, lines = c.reply()
        self.assertEqual(code, 451, lines)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.3.2", lines[0])
        self.assertTrue(c.closed())

    def test_attempt_bounded_by_mx_attempt_timeout(self):
        # The MX greets after 30 s, within its own greeting_timeout (60 s):
        # only mx_attempt_timeout (2 s here; 240 s by default, under the
        # legacy MTA's RCPT timeout) ends the wait, with 451 4.4.7.
        self.hop("127.0.0.11", "mxa", greet_delay=30)
        port = self.start_proxy(proxy_extra={"mx_attempt_timeout": "2s"})
        r = send(port, ["bob@d1.example.test"])
        code, line = r["rcpt"][0]
        self.assertEqual(code, 451, r)
        self.assertIn("4.4.7", line)
        self.assertIn("could be reached in time", line)

    def test_failed_domain_answered_at_once_for_its_other_recipients(self):
        # One attempt per domain and transaction: the second recipient of a
        # domain whose attempt just failed gets the same 4xx at once; the
        # next transaction tries again.
        self.hop("127.0.0.11", "mxa", greet_delay=30)
        port = self.start_proxy(proxy_extra={"mx_attempt_timeout": "1s"})
        c = self.legacy_client(port, 30)
        attempts = lambda: len([l for l in self.proxy.log().splitlines()
                                if " mx id=" in l and "domain=d1.example.test policy=" in l])
        for round in range(2):
            self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
            first = c.cmd("RCPT TO:<bob@d1.example.test>")
            self.assertEqual(first[0], 451, first)
            self.assertIn("4.4.7", first[1][0])
            self.assertEqual(c.cmd("RCPT TO:<alice@d1.example.test>"), first)
            self.assertEqual(c.cmd("RCPT TO:<carol@d1.example.test>"), first)
            self.assertEqual(attempts(), round + 1, self.proxy.log()[-2000:])
            self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertIn("deferred=attempt-failed-in-this-transaction", self.proxy.log())

    def test_client_leaves_during_the_attempt(self):
        # The MX accepts TCP and never greets: the legacy MTA gives up while
        # the proxy waits; the attempt is cancelled and everything is freed
        # (the proxy's exit status is checked, a leak check under ASan).
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.11", self.mx_port))
        silent.listen(8)
        self.addCleanup(silent.close)
        port = self.start_proxy()
        for _ in range(3):
            c = Client(port, timeout=10)
            c.reply()
            c.cmd("EHLO legacy.example")
            c.cmd("MAIL FROM:<a@legacy.example>")
            c.send(b"RCPT TO:<bob@d1.example.test>\r\n")
            self.assertTrue(c.silent(0.5))
            c.close()
        self.assertTrue(poll(lambda: self.proxy.log().count(" session id=") == 3), self.proxy.log())

    def test_mx_host_failing_at_each_step_defers(self):
        """The MX host fails at its greeting, STARTTLS, the handshake, or the
        EHLO inside TLS: the RCPT is deferred with a code and text that say
        which, and nothing is stored."""
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = encrypt\n")
        for mode, want in (
                ("greet-554", "451 4.4.1 mxa.example.test [127.0.0.11:%d] refused the "
                              "connection (554)" % self.mx_port),
                ("refuse454", "451 4.7.4 TLS is required, but host mxa.example.test refused "
                              "STARTTLS (454)"),
                ("drop-in-handshake", "451 4.7.5 "),
                ("ehlo2-550", "451 4.4.2 mxa.example.test rejected EHLO after TLS (550)"),
                ("ehlo2-drop", "451 4.4.2 mxa.example.test [127.0.0.11:%d] closed the "
                               "connection" % self.mx_port)):
            h = self.hop("127.0.0.11", "mxa", mode=mode)
            r = send(port, ["bob@d1.example.test"])
            self.assertEqual(r["rcpt"][0][0], 451, (mode, r))
            self.assertTrue(r["rcpt"][0][1].startswith(want), (mode, r))
            self.assertEqual(h.stored(), [], mode)
            h.stop()
            self.hops.remove(h)

    def test_domain_that_does_not_exist_is_refused(self):
        """NXDOMAIN (validated) for the recipient domain: a permanent
        refusal at RCPT, 550 5.1.2, with no connection anywhere."""
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        r = send(port, ["bob@nosuchdomain.example.test"])
        self.assertEqual(r["rcpt"][0][0], 550, r)
        self.assertIn("5.1.2", r["rcpt"][0][1])
        self.assertIn("nosuchdomain.example.test does not exist", r["rcpt"][0][1])
        self.assertEqual(h.proc.log().count("hello "), 0)

    def test_mx_host_without_address_is_skipped(self):
        """An MX host name with no address record: the next MX is tried; a
        domain whose only MX has none is deferred (never bounced: a DNS
        fault the owner can mend)."""
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        r = send(port, ["bob@badmx2.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        r = send(port, ["bob@badmx.example.test"])
        self.assertEqual(r["rcpt"][0], (451, "451 4.4.4 address lookup for nohost.example.test "
                                             "failed: no such domain"), r)
        self.assertEqual(len(h.stored()), 1)

    def test_no_mx_uses_the_address(self):
        h = self.hop("127.0.0.3", "nomx")
        port = self.start_proxy()
        r = send(port, ["bob@nomx.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertIn("implicit=yes", self.proxy.log())

    def test_two_domains_one_transaction(self):
        ha = self.hop("127.0.0.11", "mxa")
        hb = self.hop("127.0.0.13", "mxb")
        port = self.start_proxy()
        c = self.legacy_client(port, 60)
        r = send(port, ["x@d1.example.test", "y@d2.example.test", "z@d1.example.test"], client=c)
        self.assertEqual([x[0] for x in r["rcpt"]], [250, 452, 250], r)
        self.assertIn("4.5.3", r["rcpt"][1][1])
        self.assertEqual(r["data"][0], 250, r)
        # the legacy MTA sends the deferred recipient in a transaction of its own
        r = send(port, ["y@d2.example.test"], client=c)
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(ha.stored()), 1)
        self.assertEqual(len(hb.stored()), 1)
        self.assertEqual([l for l in ha.commands() if "RCPT" in l],
                         ["command RCPT TO:<x@d1.example.test> tls=True",
                          "command RCPT TO:<z@d1.example.test> tls=True"])
        self.assertEqual([l for l in hb.commands() if "RCPT" in l],
                         ["command RCPT TO:<y@d2.example.test> tls=True"])


    def test_domain_that_accepted_no_recipient_gives_way(self):
        """The transaction's first domain refused its only recipient (550):
        its connection holds nothing of the message, so a recipient of
        another domain takes the transaction over (the old next hop gets
        QUIT) where it got 452 4.5.3 and had to wait for the legacy MTA's
        retry; once that domain accepted one, the first domain's next
        recipient is the one deferred."""
        ha = self.hop("127.0.0.11", "mxa")
        hb = self.hop("127.0.0.13", "mxb")
        port = self.start_proxy()
        r = send(port, ["unknown@d1.example.test", "y@d2.example.test", "z@d1.example.test"])
        self.assertEqual([x[0] for x in r["rcpt"]], [550, 250, 452], r)
        self.assertIn("4.5.3", r["rcpt"][2][1])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(ha.stored(), [])
        self.assertEqual(len(hb.stored()), 1)
        self.assertIn("bye", ha.proc.log())
        self.assertIn("mx id=", self.proxy.log())
        self.assertTrue([l for l in self.proxy.log().splitlines()
                         if " domain=d2.example.test previous_domain=d1.example.test "
                            "connection=closed" in l], self.proxy.log()[-3000:])


class PolicyLookup(MxBase):
    def test_recipient_domain_the_policy_cannot_judge_is_refused(self):
        """[policy:.bank.example.test] tls = secure, a wildcard MX under it,
        and a next hop that offers no STARTTLS: x.bank.example.test is
        deferred by its section. -x.bank.example.test and
        x-.bank.example.test (a label starting or ending with a hyphen) were
        let through by the envelope while the policy lookup called them
        invalid and gave them the default (opportunistic TLS), so they went
        in plaintext past the section. They are refused at RCPT with
        501 5.1.3 (as Postfix's smtpd answers them), no attempt starts, and
        nothing reaches the next hop."""
        h = self.hop("127.0.0.60", "mxa", mode="strip")
        port = self.start_proxy(policies="[policy:.bank.example.test]\ntls = secure\n")
        r = send(port, ["bob@x.bank.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.4", r["rcpt"][0][1])
        for dom in ("-x.bank.example.test", "x-.bank.example.test", "X-.Bank.Example.Test."):
            r = send(port, ["bob@" + dom])
            self.assertEqual(r["rcpt"][0][0], 501, (dom, r))
            self.assertTrue(r["rcpt"][0][1].startswith("501 5.1.3 "), (dom, r))
            self.assertNotEqual(r["data"][0], 250, (dom, r))
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])
        log = self.proxy.log()
        self.assertNotIn("policy_section=default", log)
        for dom in ("domain=-x.bank", "domain=x-.bank"):
            self.assertNotIn(dom, log)


    def test_internationalized_domain_by_its_a_labels(self):
        """SMTPUTF8 mail to a UTF-8 domain (RFC 6531) is routed, and judged
        by the policy table, under the domain's A-labels: MX, TLS policy,
        logs and the transaction's domain all use
        xn--bcher-kva.bank.example.test, the name DNS knows; a [policy:]
        section may be written in UTF-8. The next hop gets the address as
        the legacy MTA wrote it. Such a recipient was refused 501 5.1.3, so
        the legacy MTA bounced the mail. A UTF-8 domain that is no domain
        name in A-labels (an underscore) is still refused."""
        h = self.hop("127.0.0.60", "mxw", cert=make_cert(self.tmp, "mxw", ["mxw.example.test"]))
        port = self.start_proxy(
            policies="[policy:b\u00fccher.bank.example.test]\ntls = verify\n")
        c = self.legacy_client(port, 60)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example> SMTPUTF8")[0], 250)
        code, lines = c.cmd("RCPT TO:<bob@B\u00dcCHER.bank.example.test>")
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("RCPT TO:<eve@a_\u00fc.bank.example.test>")[0], 501)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("Subject: \u00fc\r\n\r\nbody\r\n.\r\n".encode())
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(h.stored()[0].endswith("-tls.eml"), h.stored())
        cmds = h.commands()
        self.assertIn("command MAIL FROM:<a@legacy.example> SMTPUTF8 tls=True", cmds)
        self.assertIn("command RCPT TO:<bob@B\u00dcCHER.bank.example.test> tls=True", cmds)
        log = self.proxy.log()
        self.assertIn("domain=xn--bcher-kva.bank.example.test policy=verify "
                      "policy_section=xn--bcher-kva.bank.example.test", log)
        self.assertTrue(any("domain=xn--bcher-kva.bank.example.test" in l and
                            "outcome=tls_verified" in l for l in self.decisions()),
                        self.decisions())


class StsHosts(MxBase):
    """MTA-STS policy hosts of their own (127.0.0.60-79 and ::1), on the
    mta_sts_port of the shared one: a host with a second address, a slow
    host that then goes down."""

    def policy_server(self, host, policies):
        srv = PolicyServer(self.tmp, policies, host=host, port=self.https.port)
        self.addCleanup(srv.stop)
        return srv

    def test_policy_fetched_from_the_second_address(self):
        """mta-sts.stsmulti.example.test has an A record (127.0.0.61, where
        nothing listens: the connection is refused) and an AAAA record (::1,
        its policy host). The fetch goes on to the second address and the
        enforce policy applies: the MX, which offers no STARTTLS, is
        deferred 451 4.7.4 and nothing reaches it. Only the first address
        was tried before: no policy, and the mail went in plaintext."""
        srv = self.policy_server("::1", {"stsmulti.example.test": "mxy.example.test"})
        h = self.hop("127.0.0.65", "mxy", mode="strip",
                     cert=make_cert(self.tmp, "mxy", ["mxy.example.test"]))
        port = self.start_proxy(remember="0")
        r = send(port, ["bob@stsmulti.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(srv.requests, {"stsmulti.example.test": 1})
        self.assertIn("domain=stsmulti.example.test action=fetched policy=enforce",
                      self.proxy.log())

    def test_refresh_outlives_the_delivery_that_started_it(self):
        """An enforce policy with max_age 6 s. Past half of it, a delivery
        uses the cached copy and starts a refresh; the MX answers at once
        and the policy host only after 2 s, so the delivery ends first (the
        refresh used to be cancelled with it, and the policy lapsed). The
        refresh goes on and stores the policy; a second message meanwhile
        starts no second refresh. Then the policy host goes down and the MX
        stops offering STARTTLS: past the first copy's max_age, the
        refreshed one still enforces (451 4.7.4, nothing delivered in
        plaintext)."""
        srv = self.policy_server("127.0.0.62", {"stsslow.example.test": ("mxz.example.test", 6)})
        cert = make_cert(self.tmp, "mxz", ["mxz.example.test"])
        h = self.hop("127.0.0.63", "mxz", cert=cert)
        port = self.start_proxy(remember="0")  # remembered TLS would hide a lapsed policy
        r = send(port, ["bob@stsslow.example.test"])
        fetched = time.time()
        self.assertEqual(r["data"][0], 250, r)
        self.assertIn("domain=stsslow.example.test action=fetched policy=enforce",
                      self.proxy.log())
        time.sleep(max(0.0, fetched + 3.2 - time.time()))  # half of max_age gone, not all
        srv.delay = 2
        for _ in range(2):
            r = send(port, ["bob@stsslow.example.test"])
            self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(self.proxy.log().count("action=use-cached-refresh"), 2,
                         self.proxy.log())
        self.assertTrue(poll(lambda: "domain=stsslow.example.test refresh=ok mode=enforce "
                             "max_age=6" in self.proxy.log(), timeout=15), self.proxy.log())
        self.assertEqual(srv.requests, {"stsslow.example.test": 2})  # the fetch, one refresh
        self.assertEqual(len(h.stored()), 3)
        srv.stop()
        h.stop()
        h2 = self.hop("127.0.0.63", "mxz", mode="strip", cert=cert)
        time.sleep(max(0.0, fetched + 6.5 - time.time()))  # the first copy has expired
        r = send(port, ["bob@stsslow.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h2.stored(), [])
        log = self.proxy.log()
        self.assertNotIn("outcome=plaintext", log)
        self.assertNotIn("refresh=abandoned", log)

    def test_failed_refresh_waits_before_the_next(self):
        """stsslow's policy (max_age 6 s) is fetched; past half of it the
        policy host goes away. The next delivery uses the cached copy and
        starts a refresh, which fails at once (warn, with how long the next
        one waits: a quarter of the 2.8 s the policy has left, at least a
        second). A delivery right after it starts none (refresh=skipped
        reason=failed-recently); once the wait is over, the next delivery
        tries again. Every delivery used to ask the dead policy host
        again."""
        srv = self.policy_server("127.0.0.62", {"stsslow.example.test": ("mxz.example.test", 6)})
        h = self.hop("127.0.0.63", "mxz", cert=make_cert(self.tmp, "mxz", ["mxz.example.test"]))
        port = self.start_proxy(remember="0")
        self.assertEqual(send(port, ["bob@stsslow.example.test"])["data"][0], 250)
        fetched = time.time()
        time.sleep(max(0.0, fetched + 3.2 - time.time()))
        srv.stop()
        failed = re.compile(r"domain=stsslow\.example\.test refresh=\S+ error=\".*\" "
                            r"retry_after=1000ms")
        self.assertEqual(send(port, ["bob@stsslow.example.test"])["data"][0], 250)
        self.assertTrue(poll(lambda: len(failed.findall(self.proxy.log())) == 1, 5),
                        self.proxy.log()[-3000:])
        failed_at = time.time()
        self.assertEqual(send(port, ["bob@stsslow.example.test"])["data"][0], 250)
        log = self.proxy.log()
        self.assertIn("domain=stsslow.example.test refresh=skipped reason=failed-recently", log)
        self.assertEqual(log.count("action=use-cached-refresh"), 2, log[-3000:])
        self.assertEqual(log.count("domain=stsslow.example.test refresh=started"), 1)
        time.sleep(max(0.0, failed_at + 1.2 - time.time()))
        self.assertLess(time.time(), fetched + 5.5)  # the cached copy still applies
        self.assertEqual(send(port, ["bob@stsslow.example.test"])["data"][0], 250)
        self.assertTrue(poll(lambda: len(failed.findall(self.proxy.log())) == 2, 5),
                        self.proxy.log()[-3000:])
        self.assertEqual(self.proxy.log().count("domain=stsslow.example.test refresh=started"), 2)
        self.assertEqual(len(h.stored()), 4)

    def refresh_running(self, delay):
        """stsslow's policy fetched, then past half its max_age a delivery
        that starts a refresh the policy host answers `delay` s later.
        Returns the policy server once the delivery is over."""
        srv = self.policy_server("127.0.0.62", {"stsslow.example.test": ("mxz.example.test", 6)})
        self.hop("127.0.0.63", "mxz", cert=make_cert(self.tmp, "mxz", ["mxz.example.test"]))
        port = self.start_proxy(remember="0")
        self.assertEqual(send(port, ["bob@stsslow.example.test"])["data"][0], 250)
        fetched = time.time()
        time.sleep(max(0.0, fetched + 3.2 - time.time()))
        srv.delay = delay
        self.assertEqual(send(port, ["bob@stsslow.example.test"])["data"][0], 250)
        self.assertIn("action=use-cached-refresh", self.proxy.log())
        self.assertTrue(poll(lambda: srv.requests.get("stsslow.example.test") == 2, 5))
        return srv

    def test_refresh_outlives_a_reload(self):
        """A reload while a refresh runs: the snapshot of the configuration
        the refresh started under is freed once no session holds it (the
        ASan build would see a refresh reading it), and the refresh, on the
        copies it took, ends and stores the policy."""
        self.refresh_running(delay=2)
        with open(self.proxy.ini) as f:
            text = f.read()
        with open(self.proxy.ini, "w") as f:
            f.write(text + "\n[policy:other.test]\ntls = secure\n")
        os.kill(self.proxy.proc.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10),
                        self.proxy.log()[-2000:])
        self.assertNotIn("refresh=ok", self.proxy.log())
        self.assertTrue(poll(lambda: "domain=stsslow.example.test refresh=ok" in self.proxy.log(),
                             15), self.proxy.log())

    def test_stop_while_a_refresh_runs(self):
        """SIGTERM while a refresh waits for a silent policy host: the
        proxy does not wait for it (its sessions are over), ends it, says
        so, and exits with status 0 (under ASan: nothing leaked)."""
        self.refresh_running(delay=30)
        t0 = time.time()
        self.assertEqual(self.proxy.stop(), 0)
        self.assertLess(time.time() - t0, 10)
        log = self.proxy.log()
        self.assertIn("domain=stsslow.example.test refresh=cancelled reason=shutdown", log)
        self.assertNotIn("refresh=ok", log)


class Dane(MxBase):
    def test_dane_ee_match_delivers(self):
        # the certificate's name is other.example.test: DANE-EE ignores names
        h = self.hop("127.0.0.14", "mxd", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@dane.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("source=dane" in l and "outcome=tls_verified" in l
                            for l in self.decisions()), self.decisions())

    def dane_ta(self, sans):
        """A DANE-TA(2) delivery to danetad.example.test (MX mxt) from a
        next hop whose chain, under the TLSA record's CA, names `sans`."""
        h = self.hop("127.0.0.26", "mxt", cert=make_cert(self.tmp, "mxt", sans, ca="dane-int"))
        port = self.start_proxy()
        return h, send(port, ["bob@danetad.example.test"])

    def test_dane_ta_certificate_naming_the_mx_host(self):
        h, r = self.dane_ta(["mxt.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("source=dane" in l and "outcome=tls_verified" in l
                            for l in self.decisions()), self.decisions())

    def test_dane_ta_certificate_naming_the_recipient_domain(self):
        # RFC 7672 3.2.3: the next-hop domain is a reference identifier too
        h, r = self.dane_ta(["danetad.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("source=dane" in l and "outcome=tls_verified" in l
                            for l in self.decisions()), self.decisions())

    def test_dane_ta_certificate_naming_neither_defers(self):
        # the right trust anchor, but a name that is neither the MX host nor
        # the recipient domain (the TLSA owner name never counts as one)
        h, r = self.dane_ta(["other.example.test", "_25._tcp.mxt.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.5 DANE verification of mxt.example.test failed", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_dane_wrong_hash_defers(self):
        h = self.hop("127.0.0.15", "mxe")
        port = self.start_proxy()
        r = send(port, ["bob@danebad.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertIn("DANE", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])  # no envelope, no plaintext retry

    def test_dane_failure_beside_a_host_down_stays_451_under_reject(self):
        # on_failure = reject bounces a domain whose every host the policy
        # refused; here its other MX could not be reached, and may be up at
        # the legacy MTA's next try: 451, whichever of the two came first
        # (the refusal of the later host was a 550 5.7.5, a bounce)
        h = self.hop("127.0.0.15", "mxe")
        port = self.start_proxy(listener={"on_failure": "reject"})
        for domain in ("danemix1", "danemix2"):
            r = send(port, ["bob@%s.example.test" % domain])
            self.assertEqual(r["rcpt"][0][0], 451, (domain, r))
            self.assertTrue(r["rcpt"][0][1].startswith(
                "451 4.7.5 DANE verification of mxe.example.test failed"), (domain, r))
            d = [l for l in self.decisions() if "domain=%s." % domain in l and "outcome=" in l]
            self.assertTrue(any("outcome=deferred" in l for l in d), d)
            self.assertFalse(any("outcome=rejected" in l for l in d), d)
        r = send(port, ["bob@danebad.example.test"])  # its only host: bounced
        self.assertEqual(r["rcpt"][0][0], 550, r)
        self.assertEqual(h.stored(), [])

    def test_dane_failure_never_falls_back_to_mta_sts(self):
        # the certificate is valid for mxf and the MTA-STS policy names mxf
        h = self.hop("127.0.0.16", "mxf")
        port = self.start_proxy()
        r = send(port, ["bob@stsdane.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_failed_aaaa_lookup_keeps_dane(self):
        # MX, A and TLSA validate, the AAAA lookup fails (bogus): the address
        # answer that validated stands alone and DANE still applies, so a
        # next hop whose STARTTLS was stripped is deferred, never plaintext
        h = self.hop("127.0.0.25", "mxv", mode="strip", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@dane6.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertTrue(any("domain=dane6.example.test" in l and "source=dane" in l and
                            "outcome=refused" in l for l in self.decisions()), self.decisions())
        h.stop()
        self.hops.remove(h)
        good = self.hop("127.0.0.25", "mxv", cert=self.other)  # the TLSA record's key
        r = send(port, ["bob@dane6.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(good.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("domain=dane6.example.test" in l and "source=dane" in l and
                            "outcome=tls_verified" in l for l in self.decisions()),
                        self.decisions())

    def test_dane_via_cname_stripped_starttls_defers(self):
        # mxc.example.test CNAME mxp.example.test (secure), TLSA at
        # _25._tcp.mxp only: DANE applies, a stripped STARTTLS is no plaintext
        h = self.hop("127.0.0.27", "mxp", mode="strip", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@danecn.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])
        self.assertTrue(any("mx=mxc.example.test tlsa_base=mxp.example.test" in l and
                            "source=dane" in l and "outcome=refused" in l
                            for l in self.decisions()), self.decisions())

    def test_dane_via_cname_delivers(self):
        h = self.hop("127.0.0.27", "mxp", cert=self.other)  # the TLSA record's key
        port = self.start_proxy()
        r = send(port, ["bob@danecn.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("mx=mxc.example.test tlsa_base=mxp.example.test" in l and
                            "source=dane" in l and "outcome=tls_verified" in l
                            for l in self.decisions()), self.decisions())
        self.assertIn("sni mxp.example.test", h.proc.log())  # RFC 7672 8.1

    def test_dane_via_cname_wrong_key_defers(self):
        h = self.hop("127.0.0.28", "mxq", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@danecnbad.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.5 DANE verification of mxc2.example.test failed", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_dane_ta_via_cname_certificate_naming_the_expanded_name(self):
        # DANE-TA(2): the TLSA base domain (the expanded name) is a
        # reference identifier beside the MX host and the recipient domain
        h = self.hop("127.0.0.30", "mxu",
                     cert=make_cert(self.tmp, "mxu", ["mxu.example.test"], ca="dane-int"))
        port = self.start_proxy()
        r = send(port, ["bob@danecnta.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("tlsa_base=mxu.example.test" in l and "source=dane" in l and
                            "outcome=tls_verified" in l for l in self.decisions()),
                        self.decisions())

    def test_dane_via_cname_falls_back_to_the_listed_name(self):
        # no TLSA at the expanded name (mxr), validated NXDOMAIN: the records
        # at the name the MX record lists (mxo) apply
        h = self.hop("127.0.0.29", "mxr", mode="strip", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@danecno.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertTrue(any("domain=danecno.example.test mx=mxo.example.test addr=" in l and
                            "source=dane" in l for l in self.decisions()), self.decisions())

    def test_dane_via_cname_failed_tlsa_lookup_defers(self):
        # the TLSA lookup at the expanded name fails (bogus): deferred, never
        # a fallback to the listed name (which has none) and plaintext
        h = self.hop("127.0.0.21", "mxk", mode="strip",
                     cert=make_cert(self.tmp, "mxk", ["mxk.bogus.test"]))
        port = self.start_proxy()
        r = send(port, ["bob@tlsacn.bogus.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.5 TLSA lookup for _25._tcp.mxk.bogus.test failed", r["rcpt"][0][1])
        self.assertEqual(h.commands(), [])

    def test_dane_partial_cname_stripped_starttls_defers(self):
        # mxpc.example.test CNAME mxpz.insecure.test: the CNAME validates,
        # its expansion does not, TLSA at _25._tcp.mxpc: DANE applies (RFC
        # 7672 2.2.2), so a stripped STARTTLS is no plaintext delivery
        h = self.hop("127.0.0.32", "mxpz", mode="strip", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@danepart.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])
        self.assertTrue(any("mx=mxpc.example.test tlsa_base=mxpc.example.test expansion=insecure"
                            in l and "source=dane" in l and "outcome=refused" in l
                            for l in self.decisions()), self.decisions())

    def test_dane_partial_cname_delivers(self):
        h = self.hop("127.0.0.32", "mxpz", cert=self.other)  # the TLSA record's key
        port = self.start_proxy()
        r = send(port, ["bob@danepart.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")
        self.assertTrue(any("mx=mxpc.example.test tlsa_base=mxpc.example.test expansion=insecure"
                            in l and "source=dane" in l and "outcome=tls_verified" in l
                            for l in self.decisions()), self.decisions())
        # SNI: the TLSA base domain, the listed name (never the insecure expansion)
        self.assertIn("sni mxpc.example.test", h.proc.log())

    def test_dane_partial_cname_wrong_key_defers(self):
        h = self.hop("127.0.0.33", "mxpz2", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@danepartbad.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.5 DANE verification of mxpc2.example.test failed", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_dane_ta_partial_cname_never_names_the_insecure_expansion(self):
        # DANE-TA(2) at the listed name: the certificate must name it (or the
        # recipient domain); the expansion did not validate, so a certificate
        # naming only it is refused
        for sans, ok in [(["mxpz3.insecure.test"], False), (["mxpct.example.test"], True)]:
            h = self.hop("127.0.0.34", "mxpz3",
                         cert=make_cert(self.tmp, "mxpz3", sans, ca="dane-int"))
            port = self.proxy.port("out") if self.proxy else self.start_proxy()
            r = send(port, ["bob@danepartta.example.test"])
            if ok:
                self.assertEqual(r["data"][0], 250, (sans, r, self.decisions()))
                self.assertEqual(h.stored()[0][-8:], "-tls.eml")
                self.assertTrue(any("tlsa_base=mxpct.example.test expansion=insecure" in l and
                                    "outcome=tls_verified" in l for l in self.decisions()),
                                self.decisions())
            else:
                self.assertEqual(r["rcpt"][0][0], 451, (sans, r, self.decisions()))
                self.assertIn("4.7.5 DANE verification of mxpct.example.test failed",
                              r["rcpt"][0][1])
                self.assertEqual(h.stored(), [])
            h.stop()
            self.hops.remove(h)

    def test_dane_partial_cname_failed_lookup_defers(self):
        # the address answer ends insecure, and the question whether the
        # listed name's own CNAME validated fails (SERVFAIL), or is answered
        # by a validated "no such CNAME" (the DNS changed in between): DANE
        # may apply, so deferred, never a plaintext delivery
        for mode, why in [("cname-servfail", "SERVFAIL"), ("cname-gone", "no longer a CNAME")]:
            with Responder(self.tmp, mode) as resp:
                h = self.hop("127.0.0.35", "mxa", mode="strip")
                port = self.start_proxy(resolver=resp.addr)
                r = send(port, ["bob@part.test"])
                self.assertEqual(r["rcpt"][0][0], 451, (mode, r, self.decisions()))
                self.assertIn("4.7.5 CNAME lookup for mx.part.test failed", r["rcpt"][0][1])
                self.assertIn(why, r["rcpt"][0][1])
                self.assertEqual(h.commands(), [])
                self.assertTrue(any("domain=part.test" in l and "source=dane" in l and
                                    "outcome=refused" in l for l in self.decisions()),
                                self.decisions())
                self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-3000:])
                self.proxy = None
                h.stop()
                self.hops.remove(h)

    def test_partial_cname_lookup_failure_delivers_under_testing(self):
        h = self.hop("127.0.0.35", "mxa", mode="strip")
        with Responder(self.tmp, "cname-servfail") as resp:
            port = self.start_proxy(resolver=resp.addr, listener={"testing": "yes"})
            r = send(port, ["bob@part.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertTrue(h.stored()[0].endswith("-plain.eml"), h.stored())
        self.assert_would_refuse("CNAME lookup for mx.part.test failed")

    def test_mx_host_cname_in_an_unsigned_zone_is_not_dane(self):
        # cn.insecure.test CNAME mxpz2.insecure.test: the listed name is not
        # secure either, its TLSA record (a wrong hash) is never used
        h = self.hop("127.0.0.33", "mxpz2", mode="strip", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@danecninsec.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertTrue(h.stored()[0].endswith("-plain.eml"), h.stored())
        self.assertTrue(any("domain=danecninsec.example.test" in l and "source=config" in l and
                            "policy=may" in l for l in self.decisions()), self.decisions())

    def test_insecure_tlsa_falls_back(self):
        # insecure.test is unsigned: its TLSA record (a wrong hash) is not trusted
        h = self.hop("127.0.0.1", "mxa")
        port = self.start_proxy()
        r = send(port, ["bob@insecure.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(any("domain=insecure.test" in l and "source=config" in l and
                            "policy=may" in l for l in self.decisions()), self.decisions())

    def test_unusable_tlsa_encrypts_under_dane_defers_under_dane_only(self):
        h = self.hop("127.0.0.20", "mxj", cert=self.other)  # no chain to any trusted CA
        port = self.start_proxy()  # dane: the default
        r = send(port, ["bob@daneunusable.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(any("domain=daneunusable.example.test" in l and
                            "outcome=tls_encrypted" in l for l in self.decisions()),
                        self.decisions())
        self.proxy.stop()
        self.proxy = None
        port = self.start_proxy(policies="[policy:daneunusable.example.test]\ntls = dane-only\n")
        r = send(port, ["bob@daneunusable.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertIn("no usable TLSA record", r["rcpt"][0][1])
        self.assertEqual(len(h.stored()), 1)  # nothing more

    def test_unusable_tlsa_under_dane_still_requires_tls(self):
        # RFC 7672 2.2: validated TLSA records, even all unusable, mean the
        # host must do TLS; a next hop that does not offer STARTTLS (or had
        # it stripped) is deferred, never given the mail in plaintext
        h = self.hop("127.0.0.20", "mxj", mode="strip", cert=self.other)
        port = self.start_proxy()  # dane: the default
        r = send(port, ["bob@daneunusable.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_unusable_tlsa_keeps_remembered_tls(self):
        # Unusable TLSA records (PKIX-EE) authenticate nothing: a domain
        # remembered from a verified delivery must still give verified TLS,
        # or a man in the middle with any certificate would get its mail.
        good = self.hop("127.0.0.20", "mxj")  # valid for mxj.example.test
        port = self.start_proxy(policies="[policy:daneunusable.example.test]\ntls = verify\n")
        r = send(port, ["bob@daneunusable.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertTrue(poll(lambda: "remember id=" in self.proxy.log()), self.proxy.log())
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy = None
        good.stop()
        self.hops.remove(good)
        bad = self.hop("127.0.0.20", "mxj", cert=self.other)  # not valid for mxj
        port = self.start_proxy()  # dane: the default
        r = send(port, ["bob@daneunusable.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertTrue(r["rcpt"][0][1].startswith(
            "451 4.7.5 certificate verification failed for mxj.example.test"), r)
        self.assertEqual(bad.stored(), [])
        self.assertEqual(bad.commands(), [])
        self.assertIn("possible_downgrade", self.proxy.log())
        self.assertTrue(any("source=remembered" in l and "outcome=refused" in l
                            for l in self.decisions()), self.decisions())

    def test_unusable_tlsa_keeps_mta_sts_enforce(self):
        # The same with an MTA-STS enforce policy naming the MX: DANE gives
        # no authentication, so the policy's (a certificate for the MX) holds
        bad = self.hop("127.0.0.22", "mxl", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@stsunusable.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertTrue(r["rcpt"][0][1].startswith(
            "451 4.7.5 certificate verification failed for mxl.example.test"), r)
        self.assertEqual(bad.commands(), [])
        self.assertTrue(any("source=mta-sts" in l and "outcome=refused" in l
                            for l in self.decisions()), self.decisions())
        bad.stop()
        self.hops.remove(bad)
        good = self.hop("127.0.0.22", "mxl")
        r = send(port, ["bob@stsunusable.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(good.stored()), 1)
        self.assertTrue(any("domain=stsunusable.example.test" in l and "source=mta-sts" in l
                            and "outcome=tls_verified" in l for l in self.decisions()),
                        self.decisions())

    def sts_testing_reports(self, domain, *parts):
        """An MTA-STS testing policy's failure was logged and counted."""
        lines = [l for l in self.decisions() if "domain=" + domain in l and
                 "source=mta-sts mode=testing outcome=would_refuse" in l and
                 all(p in l.split("reason=", 1)[-1] for p in parts)]
        self.assertTrue(lines, self.decisions())

    def test_mta_sts_testing_reports_a_bad_certificate(self):
        h = self.hop("127.0.0.23", "mxm", cert=self.other)  # not valid for mxm
        port = self.start_proxy()
        r = send(port, ["bob@ststest.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertFalse(h.stored()[0].endswith("-plain.eml"), h.stored())
        self.sts_testing_reports("ststest.example.test", "certificate:")
        self.assertTrue(any("domain=ststest.example.test" in l and "source=mta-sts" in l and
                            "outcome=tls_encrypted" in l for l in self.decisions()),
                        self.decisions())

    def test_mta_sts_testing_reports_beside_unusable_tlsa(self):
        # The unusable TLSA records make the delivery DANE's (TLS required,
        # nothing authenticated) but the MTA-STS policy still has its report
        h = self.hop("127.0.0.24", "mxn", cert=self.other)
        port = self.start_proxy()
        r = send(port, ["bob@ststestu.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.sts_testing_reports("ststestu.example.test", "certificate:")

    def test_mta_sts_testing_reports_an_mx_it_does_not_name(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        r = send(port, ["bob@ststestx.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.sts_testing_reports("ststestx.example.test",
                                 "MX host mxa.example.test is not allowed")

    def test_mta_sts_testing_reports_a_missing_starttls(self):
        h = self.hop("127.0.0.23", "mxm", mode="strip")
        port = self.start_proxy()
        r = send(port, ["bob@ststest.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(h.stored()[0][-10:], "-plain.eml", h.stored())
        self.sts_testing_reports("ststest.example.test", "not offered by host mxm.example.test")

    def test_dane_only_without_tlsa_defers(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = dane-only\n")
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])

    def test_dane_only_without_tlsa_delivers_under_testing(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = dane-only\n",
                                listener={"testing": "yes"})
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assert_would_refuse("no DNSSEC-validated TLSA records for mxa.example.test", "dane-only")

    def tlsa_lookup_fails(self, listener=None):
        h = self.hop("127.0.0.21", "mxk", cert=make_cert(self.tmp, "mxk", ["mxk.bogus.test"]))
        port = self.start_proxy(listener=listener)
        return h, send(port, ["bob@tlsafail.bogus.test"])

    def test_tlsa_lookup_failure_defers(self):
        h, r = self.tlsa_lookup_fails()
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5 TLSA lookup for _25._tcp.mxk.bogus.test failed", r["rcpt"][0][1])
        self.assertEqual(h.commands(), [])

    def test_tlsa_lookup_failure_delivers_under_testing(self):
        h, r = self.tlsa_lookup_fails({"testing": "yes"})
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assert_would_refuse("TLSA lookup for _25._tcp.mxk.bogus.test failed")

    def test_tlsa_lookup_failure_stays_451_under_reject(self):
        # a failed lookup is a DNS failure, not a refusal: never a bounce
        h, r = self.tlsa_lookup_fails({"on_failure": "reject"})
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5 TLSA lookup for _25._tcp.mxk.bogus.test failed", r["rcpt"][0][1])
        self.assertEqual(h.commands(), [])

    def test_dane_failure_delivers_under_testing_and_says_why(self):
        h = self.hop("127.0.0.16", "mxf")
        port = self.start_proxy(listener={"testing": "yes"})
        r = send(port, ["bob@stsdane.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assert_would_refuse("DANE verification of mxf.example.test failed")


class DaneWarning(MxBase):
    """DANE trusts the resolver's AD bit: a DANE policy (the default for
    unlisted domains) behind a resolver that does not validate (here nsd
    itself, which gives no AD bit) is warned about at start-up and after a
    reload that brings one in; a validating resolver gives no warning."""
    WARNING = "dnssec WARNING: DANE is configured"

    def nsd(self):
        return "127.0.0.1:%d" % self.dns.nsd_port

    def test_warning_at_start_up(self):
        self.start_proxy(resolver=self.nsd(), policies="[policy:example.test]\ntls = dane\n")
        self.assertTrue(poll(lambda: self.WARNING in self.proxy.log(), 10), self.proxy.log())
        line = [l for l in self.proxy.log().splitlines() if self.WARNING in l][0]
        self.assertIn("resolver %s does not validate DNSSEC: no AD bit" % self.nsd(), line)

    def test_no_warning_with_a_validating_resolver(self):
        self.start_proxy(policies="[policy:example.test]\ntls = dane-only\n")
        send(self.proxy.port("out"), ["x@nullmx.example.test"])  # the proxy is up and serving
        self.assertNotIn(self.WARNING, self.proxy.log())

    def test_warning_after_a_reload_that_adds_dane(self):
        # unlisted domains get tls = dane unless [policy:default] says otherwise
        self.start_proxy(resolver=self.nsd(), policies="[policy:default]\ntls = mta-sts\n")
        send(self.proxy.port("out"), ["x@nullmx.example.test"])
        self.assertNotIn(self.WARNING, self.proxy.log())
        with open(self.proxy.ini, "a") as f:
            f.write("[policy:.example.test]\ntls = dane\n")
        os.kill(self.proxy.proc.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10),
                        self.proxy.log()[-2000:])
        self.assertTrue(poll(lambda: self.WARNING in self.proxy.log(), 10),
                        self.proxy.log()[-2000:])

    def reload_with_silent_resolver(self, metrics=None):
        """A proxy without DANE, then a reload that brings in a DANE policy
        and a resolver that never answers (a UDP socket nobody reads).
        Returns that resolver's address."""
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        self.start_proxy(resolver=self.nsd(), policies="[policy:default]\ntls = mta-sts\n",
                         metrics=metrics)
        addr = "127.0.0.1:%d" % silent.getsockname()[1]
        with open(self.proxy.ini) as f:
            text = f.read()
        with open(self.proxy.ini, "w") as f:
            f.write(text.replace("resolver = %s" % self.nsd(), "resolver = " + addr)
                    + "[policy:.example.test]\ntls = dane\n")
        os.kill(self.proxy.proc.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10),
                        self.proxy.log()[-2000:])
        return addr

    def test_reload_check_does_not_hold_up_the_main_loop(self):
        # After a reload the check runs beside everything else: /readyz and
        # signals are answered at once, and the warning comes at dns_timeout.
        mport = free_port()
        addr = self.reload_with_silent_resolver(metrics=mport)
        # dns_timeout is 5 s: a check run on the main thread would keep
        # /readyz from answering that long
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % mport, timeout=2) as r:
            self.assertEqual(r.status, 200)
        self.assertNotIn(self.WARNING, self.proxy.log())
        self.assertTrue(poll(lambda: self.WARNING in self.proxy.log(), 15),
                        self.proxy.log()[-2000:])
        line = [l for l in self.proxy.log().splitlines() if self.WARNING in l][0]
        self.assertIn("resolver %s does not validate DNSSEC: DNSKEY of example.test" % addr, line)

    def test_stop_while_the_reload_check_runs(self):
        self.reload_with_silent_resolver()
        # SIGTERM at once: the check is cancelled, the process ends cleanly
        # (exit code 0, and no leak under ASan) well before dns_timeout.
        proxy, self.proxy = self.proxy, None
        started = time.time()
        self.assertEqual(proxy.stop(), 0, proxy.log()[-3000:])
        self.assertLess(time.time() - started, 4)
        self.assertNotIn(self.WARNING, proxy.log())


class Secure(MxBase):
    """tls = secure (Postfix's "secure" without a servername): the
    certificate must name the recipient domain or an MX host below it."""

    def test_mx_host_below_the_domain_delivers(self):
        h = self.hop("127.0.0.31", "mxsec", cert=make_cert(self.tmp, "mxsec",
                                                            ["mx.sec.example.test"]))
        port = self.start_proxy(policies="[policy:sec.example.test]\ntls = secure\n")
        r = send(port, ["bob@sec.example.test"])
        self.assertEqual(r["data"][0], 250, (r, self.decisions()))
        self.assertEqual(h.stored()[0][-8:], "-tls.eml")

    def test_mx_host_merely_ending_in_the_domain_defers(self):
        # mxa.example.test ends in "a.example.test" but is not below it:
        # its certificate (for mxa.example.test) does not verify the domain
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy(policies="[policy:a.example.test]\ntls = secure\n")
        r = send(port, ["bob@a.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, (r, self.decisions()))
        self.assertIn("4.7.5 certificate verification failed for mxa.example.test",
                      r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])


class MtaSts(MxBase):
    def test_enforce_delivers_with_a_valid_certificate(self):
        h = self.hop("127.0.0.17", "mxg")
        port = self.start_proxy()
        r = send(port, ["bob@sts.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assertTrue(any("source=mta-sts" in l and "outcome=tls_verified" in l
                            for l in self.decisions()), self.decisions())
        self.assertIn("action=fetched", self.proxy.log())

    def test_enforce_with_a_certificate_mismatch_defers(self):
        h = self.hop("127.0.0.17", "mxg", cert=self.certs["mxa"])
        port = self.start_proxy()
        r = send(port, ["bob@sts.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_policy_refreshed_after_half_its_max_age(self):
        # The MX greets after 1 s, so the refresh beside the delivery ends
        # first (StsHosts.test_refresh_outlives_the_delivery_that_started_it:
        # the other way round).
        h = self.hop("127.0.0.17", "mxg", greet_delay=1)
        port = self.start_proxy()
        r = send(port, ["bob@stsr.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertIn("action=fetched", self.proxy.log())
        time.sleep(2.1)  # with the 1 s greeting: half of max_age (6 s) gone, not all
        r = send(port, ["bob@stsr.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        log = self.proxy.log()
        self.assertIn("action=use-cached-refresh", log)
        self.assertIn("domain=stsr.example.test refresh=ok mode=enforce max_age=6", log)
        self.assertEqual(len(h.stored()), 2)

    def test_mx_outside_the_policy_defers(self):
        h = self.hop("127.0.0.11", "mxa")  # a valid certificate, but not a policy host
        port = self.start_proxy()
        r = send(port, ["bob@stsx.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertIn("not allowed by the MTA-STS policy", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])
        self.assertEqual(h.commands(), [])

    def test_mx_outside_the_policy_delivers_under_testing(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy(listener={"testing": "yes"})
        r = send(port, ["bob@stsx.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assert_would_refuse("not allowed by the MTA-STS policy of stsx.example.test")

    def unknown_policy(self, listener=None):
        """A domain whose _mta-sts TXT lookup fails (SERVFAIL), with no
        cached policy: its MTA-STS state is unknown."""
        resp = Responder(self.tmp, "servfail")
        self.addCleanup(resp.stop)
        dns = DnsEnv(os.path.join(self.tmp, "outage"), extra={"example.test": zone(ZERO)},
                     stubs={"_mta-sts.sts2.example.test": resp.addr})
        self.addCleanup(dns.stop)
        h = self.hop("127.0.0.19", "mxi")
        port = self.start_proxy(resolver=dns.resolver, listener=listener)
        return h, send(port, ["bob@sts2.example.test"])

    def test_unknown_policy_defers_4_4_3(self):
        h, r = self.unknown_policy()
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.4.3", r["rcpt"][0][1])
        self.assertIn("MTA-STS policy of sts2.example.test unknown", r["rcpt"][0][1])
        self.assertEqual(h.stored(), [])

    def test_unknown_policy_delivers_under_testing(self):
        h, r = self.unknown_policy({"testing": "yes"})
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(len(h.stored()), 1)
        self.assert_would_refuse("MTA-STS policy of sts2.example.test unknown")

    def test_unknown_policy_stays_4_4_3_under_reject(self):
        # on_failure = reject bounces what the policy refuses (5.7.x); a
        # policy that could not be learnt (the _mta-sts TXT lookup failed)
        # is a DNS failure, which a later try may cure: it stays 451, and
        # the decision line says what the legacy MTA was told
        h, r = self.unknown_policy({"on_failure": "reject"})
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertTrue(r["rcpt"][0][1].startswith(
            "451 4.4.3 MTA-STS policy of sts2.example.test unknown"), r)
        self.assertEqual(h.stored(), [])
        d = [l for l in self.decisions() if 'reply="451 4.4.3' in l]
        self.assertTrue(d and "outcome=deferred" in d[0], self.decisions())

    def test_policy_failure_bounces_under_reject(self):
        # a certificate the enforce policy refuses: 550 5.7.5, logged as rejected
        h = self.hop("127.0.0.17", "mxg", cert=self.certs["mxa"])
        port = self.start_proxy(listener={"on_failure": "reject"})
        r = send(port, ["bob@sts.example.test"])
        self.assertEqual(r["rcpt"][0][0], 550, r)
        self.assertTrue(r["rcpt"][0][1].startswith("550 5.7.5 certificate verification failed"), r)
        self.assertEqual(h.commands(), [])
        d = [l for l in self.decisions() if 'reply="550 5.7.5' in l]
        self.assertTrue(d and "outcome=rejected" in d[0], self.decisions())

    def test_cached_policy_enforced_during_dns_outage(self):
        good = self.hop("127.0.0.19", "mxi")
        port = self.start_proxy()
        r = send(port, ["bob@sts2.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertIn("action=fetched", self.proxy.log())
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy = None
        good.stop()
        self.hops.remove(good)
        with open(os.path.join(self.state, "domains.state")) as f:
            self.assertIn("sts sts2.example.test 7 ", f.read())
        # Now the _mta-sts TXT lookups fail (SERVFAIL from the scripted
        # responder), the policy server is gone, and the MX presents a
        # certificate for another name: the cached enforce policy (from
        # state_dir, across the restart) must still refuse it.
        resp = Responder(self.tmp, "servfail")
        self.addCleanup(resp.stop)
        dns = DnsEnv(os.path.join(self.tmp, "outage"),
                     extra={"example.test": zone(ZERO)},
                     stubs={"_mta-sts.sts2.example.test": resp.addr})
        self.addCleanup(dns.stop)
        bad = self.hop("127.0.0.19", "mxi", cert=self.certs["mxa"])
        port = self.start_proxy(resolver=dns.resolver)
        r = send(port, ["bob@sts2.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(bad.stored(), [], self.proxy.log())
        self.assertIn("action=use-cached", self.proxy.log())


    def test_policy_that_cannot_be_fetched_is_no_policy(self):
        """RFC 8461 3.3: an _mta-sts record whose policy cannot be fetched
        (here: the policy host's certificate does not name it, or it has no
        address), with no cached policy, is delivered as if the domain had
        no MTA-STS, and the failure is logged."""
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        for dom in ("stsnopol", "stsnoaddr"):
            r = send(port, ["bob@%s.example.test" % dom])
            self.assertEqual(r["data"][0], 250, (dom, r))
        self.assertEqual(len(h.stored()), 2)
        log = self.proxy.log()
        self.assertRegex(log, r"mta_sts id=\S+ domain=stsnopol.example.test fetch=\S+ error=")
        self.assertIn('domain=stsnoaddr.example.test fetch=failed error="no address for '
                      'mta-sts.stsnoaddr.example.test"', log)
        for dom in ("stsnopol", "stsnoaddr"):
            self.assertRegex(log, r"mta_sts id=\S+ domain=%s.example.test action=fetch-failed "
                                  r"policy=none" % dom)

    def test_cached_policy_enforced_when_a_new_policy_cannot_be_fetched(self):
        """The domain announces a new policy id but its policy server is
        gone: the cached enforce policy stays in force (RFC 8461 5.1), so an
        MX presenting a certificate for another name is refused."""
        good = self.hop("127.0.0.19", "mxi")
        port = self.start_proxy()
        r = send(port, ["bob@sts2.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertIn("action=fetched", self.proxy.log())
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy = None
        good.stop()
        self.hops.remove(good)
        self.https.stop()
        dns = DnsEnv(os.path.join(self.tmp, "newid"),
                     extra={"example.test": [l.replace("id=7", "id=8") for l in zone(ZERO)]})
        self.addCleanup(dns.stop)
        bad = self.hop("127.0.0.19", "mxi", cert=self.certs["mxa"])
        port = self.start_proxy(resolver=dns.resolver)
        r = send(port, ["bob@sts2.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.5", r["rcpt"][0][1])
        self.assertEqual(bad.stored(), [], self.proxy.log())
        log = self.proxy.log()
        self.assertRegex(log, r"mta_sts id=\S+ domain=sts2.example.test fetch=connect error=")
        self.assertRegex(log, r"mta_sts id=\S+ domain=sts2.example.test action=fetch-failed "
                              r"policy=enforce")


class Remembered(MxBase):
    def test_remembered_domain_stops_offering_starttls(self):
        h = self.hop("127.0.0.18", "mxh")
        mport = free_port()
        port = self.start_proxy(metrics=mport)
        r = send(port, ["bob@rem.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertTrue(poll(lambda: "remember id=" in self.proxy.log()), self.proxy.log())
        h.stop()
        self.hops.remove(h)
        stripped = self.hop("127.0.0.18", "mxh", mode="strip")
        r = send(port, ["bob@rem.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertEqual(stripped.stored(), [])
        self.assertEqual(stripped.commands(), [])
        log = self.proxy.log()
        self.assertIn("possible_downgrade", log)
        self.assertTrue(any("source=remembered" in l and "outcome=refused" in l
                            for l in self.decisions()), self.decisions())
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as m:
            text = m.read().decode()
        self.assertIn('stp_policy_decisions_total{listener="out",source="config",'
                      'decision="tls_verified"} 1', text)
        self.assertIn('stp_policy_decisions_total{listener="out",source="remembered",'
                      'decision="refused"} 1', text)
        self.assertIn('stp_downgrades_refused_total{listener="out",level="may",'
                      'reason="not_offered"} 1', text)

    def test_remembered_domain_stops_speaking_esmtp(self):
        # EHLO refused hides STARTTLS as well as stripping it does
        h = self.hop("127.0.0.18", "mxh")
        port = self.start_proxy()
        r = send(port, ["bob@rem.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertTrue(poll(lambda: "remember id=" in self.proxy.log()), self.proxy.log())
        h.stop()
        self.hops.remove(h)
        old = self.hop("127.0.0.18", "mxh", mode="helo-only")
        r = send(port, ["bob@rem.example.test"])
        self.assertEqual(r["rcpt"][0][0], 451, r)
        self.assertIn("4.7.4", r["rcpt"][0][1])
        self.assertNotIn("hello HELO", old.proc.log())
        self.assertEqual(old.commands(), [])
        self.assertIn("possible_downgrade", self.proxy.log())

    def test_unremembered_domain_may_go_plaintext(self):
        h = self.hop("127.0.0.18", "mxh", mode="strip")
        port = self.start_proxy()
        r = send(port, ["bob@rem.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        self.assertTrue(h.stored()[0].endswith("-plain.eml"))


if __name__ == "__main__":
    unittest.main()


class Probe(MxBase):
    """`smtp-tls-proxy probe DOMAIN`: what the administrator sees."""

    def probe(self, domain, *args, policies="", resolver=None, state=False):
        ini = os.path.join(self.tmp, "probe.ini")
        with open(ini, "w") as f:
            f.write("""[proxy]
hostname = probe.example.test
%sresolver = %s
dns_timeout = 5s
mx_port = %d
mta_sts_port = %d
mta_sts_ca_file = %s/ca.pem
[tls]
ca_file = %s/ca.pem
[listener:out]
mode = outbound
listen = 127.0.0.1:%d
route = mx
""" % ("state_dir = %s\nremember_tls = 30d\n" % self.state if state else "",
       resolver or self.dns.resolver, self.mx_port, self.https.port, CERTS, CERTS,
       free_port()) + policies)
        p = subprocess.run([BIN, "probe", domain, "-c", ini] + list(args), capture_output=True,
                           timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_probe_uses_the_trust_store_delivery_uses(self):
        """An MX host whose certificate only a [policy:] section's ca_file
        (or the route = mx listener's) trusts: delivery verifies it, and so
        does the probe (it took [tls] ca_file alone and said "defer")."""
        self.hop("127.0.0.11", "mxa",
                 cert=make_cert(self.tmp, "mxa-other", ["mxa.example.test"], ca="otherca"))
        other = os.path.join(CERTS, "otherca.pem")
        for policies in ("[policy:d1.example.test]\ntls = verify\nca_file = %s\n" % other,
                         "ca_file = %s\n[policy:d1.example.test]\ntls = verify\n" % other):
            rc, out, err = self.probe("d1.example.test", policies=policies)
            self.assertIn("chain valid", out, (policies, out, err))
            self.assertIn("verdict      deliver", out, (policies, out, err))
        port = self.start_proxy(policies="[policy:d1.example.test]\ntls = verify\n"
                                "ca_file = %s\n" % other)
        r = send(port, ["bob@d1.example.test"])
        self.assertEqual(r["data"][0], 250, r)
        rc, out, err = self.probe("d1.example.test", policies="[policy:d1.example.test]\n"
                                  "tls = verify\n")  # [tls] ca_file only: not trusted
        self.assertIn("verdict      defer", out, (out, err))

    def test_probe_reads_what_delivery_remembers(self):
        """The probe reads state_dir as delivery finds it. rem.example.test
        was reached over verified TLS, so the proxy defers it once its MX
        stops offering STARTTLS: the probe says "defer" (it said "deliver
        (plaintext)", reading no state). sts.example.test's MTA-STS policy
        is cached under the id DNS still publishes: the probe applies the
        cached copy, as delivery does, and says so. Nothing in state_dir
        changes."""
        h = self.hop("127.0.0.18", "mxh")
        self.hop("127.0.0.17", "mxg")
        port = self.start_proxy()
        for dom in ("rem.example.test", "sts.example.test"):
            r = send(port, ["bob@" + dom])
            self.assertEqual(r["data"][0], 250, (dom, r))
        path = os.path.join(self.state, "domains.state")

        def learnt():
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                return False
            return "tls rem.example.test " in text and "sts sts.example.test " in text
        self.assertTrue(poll(learnt), self.proxy.log())
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy = None
        with open(path, "rb") as f:
            before = f.read()
        h.stop()
        self.hops.remove(h)
        self.hop("127.0.0.18", "mxh", mode="strip")

        rc, out, err = self.probe("rem.example.test", "--json", state=True)
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertIsNotNone(j["remembered_tls"], j)
        self.assertLessEqual(j["remembered_tls"]["since"], time.time())
        self.assertIn("2 domains", j["state"])
        self.assertEqual(j["mx"][0]["verdict"], "defer", j)
        self.assertIn("remembered TLS (verified TLS since ", j["mx"][0]["reason"])
        self.assertIn("STARTTLS not offered", j["mx"][0]["reason"])
        rc, out, err = self.probe("rem.example.test", state=True)
        self.assertIn("verified TLS required (since ", out)
        self.assertRegex(out, r"verdict +defer: remembered TLS")
        rc, out, err = self.probe("rem.example.test", "--json")  # no state_dir
        j = json.loads(out)
        self.assertIsNone(j["remembered_tls"])
        self.assertIn("no state_dir", j["state"])
        self.assertEqual(j["mx"][0]["verdict"], "deliver (plaintext)", j)

        rc, out, err = self.probe("sts.example.test", "--json", state=True)
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["mta_sts"]["mode"], "enforce", j)
        self.assertTrue(j["mta_sts"]["source"].startswith("cached (the same id): id 1, fetched "),
                        j["mta_sts"])
        self.assertEqual(j["mx"][0]["verdict"], "deliver (MTA-STS)", j)
        rc, out, err = self.probe("sts.example.test", "--json")
        self.assertEqual(json.loads(out)["mta_sts"]["source"], "fetched")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(sorted(os.listdir(self.state)), ["domains.state"])

    def test_probe_mta_sts_lookup_failure_defers_as_delivery(self):
        """A _mta-sts TXT lookup that fails, with nothing cached, makes
        delivery defer (451 4.4.3, the policy is unknown): so does the probe,
        which called the record "none" and went on."""
        resp = Responder(self.tmp, "servfail")
        self.addCleanup(resp.stop)
        dns = DnsEnv(os.path.join(self.tmp, "outage"), extra={"example.test": zone(ZERO)},
                     stubs={"_mta-sts.sts2.example.test": resp.addr})
        self.addCleanup(dns.stop)
        self.hop("127.0.0.19", "mxi")
        rc, out, err = self.probe("sts2.example.test", "--json", resolver=dns.resolver)
        j = json.loads(out)
        self.assertTrue(j["mta_sts"]["record"].startswith("lookup failed"), j)
        self.assertEqual(j["mx"][0]["verdict"], "defer", j)
        self.assertIn("MTA-STS policy unknown", j["mx"][0]["reason"])

    def test_probe_json_on_a_dane_domain(self):
        self.hop("127.0.0.14", "mxd", cert=self.other)
        rc, out, err = self.probe("dane.example.test", "--json")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["domain"], "dane.example.test")
        self.assertEqual(j["policy"], "dane")
        self.assertTrue(j["mx_dnssec"])
        m = j["mx"][0]
        self.assertEqual(m["host"], "mxd.example.test")
        self.assertEqual(m["addresses"], "127.0.0.14")
        self.assertTrue(m["starttls"])
        self.assertTrue(m["tls_version"].startswith("TLSv1."), m)
        self.assertTrue(m["chain_valid"])
        self.assertFalse(m["name_match"])  # other.example.test: DANE-EE does not care
        self.assertIn("other.example.test", m["names"])
        self.assertTrue(m["tlsa_dnssec"])
        self.assertEqual(m["tlsa"], ["3 1 1 " + spki_sha256(self.other[0])])
        self.assertEqual(m["tlsa_base_domain"], "mxd.example.test")
        self.assertEqual(m["dane"], "match")
        self.assertEqual(m["verdict"], "deliver (DANE)")

    def test_probe_dane_ta_names_as_delivery(self):
        # DANE-TA(2): the recipient domain is a reference identifier, the
        # TLSA owner name is not (RFC 7672 3.2.3), as for a delivery
        for sans, dane in [(["danetad.example.test"], "match"),
                           (["_25._tcp.mxt.example.test"], "no match")]:
            h = self.hop("127.0.0.26", "mxt",
                         cert=make_cert(self.tmp, "mxt", sans, ca="dane-int"))
            rc, out, err = self.probe("danetad.example.test", "--json")
            self.assertEqual(rc, 0, err)
            m = json.loads(out)["mx"][0]
            self.assertEqual(m["dane"], dane, (sans, m))
            h.stop()
            self.hops.remove(h)

    def test_probe_dane_via_cname(self):
        # TLSA records at the MX host's CNAME expansion only, as delivery
        # finds them (RFC 7672 2.2.2)
        self.hop("127.0.0.27", "mxp", cert=self.other)
        rc, out, err = self.probe("danecn.example.test", "--json")
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        self.assertEqual((m["host"], m["tlsa_base_domain"]), ("mxc.example.test", "mxp.example.test"))
        self.assertEqual(m["tlsa"], ["3 1 1 " + spki_sha256(self.other[0])])
        self.assertEqual((m["dane"], m["verdict"]), ("match", "deliver (DANE)"), m)
        rc, out, err = self.probe("danecn.example.test")
        self.assertIn("  TLSA base    mxp.example.test (the MX host's CNAME expansion)",
                      out.splitlines())

    def test_probe_dane_partial_cname(self):
        # the MX host's own CNAME validates, its expansion (unsigned) does
        # not: TLSA at the listed name, as delivery asks (RFC 7672 2.2.2)
        self.hop("127.0.0.32", "mxpz", cert=self.other)
        rc, out, err = self.probe("danepart.example.test", "--json")
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        self.assertEqual((m["dane"], m["verdict"]), ("match", "deliver (DANE)"), m)
        self.assertEqual(m["tlsa"], ["3 1 1 " + spki_sha256(self.other[0])])
        self.assertEqual((m["host"], m["tlsa_base_domain"], m["expanded_name"]),
                         ("mxpc.example.test", "mxpc.example.test", "mxpz.insecure.test"), m)
        self.assertEqual((m["addresses_dnssec"], m["host_dnssec"], m["tlsa_dnssec"]),
                         (False, True, True), m)
        rc, out, err = self.probe("danepart.example.test")
        self.assertIn("  TLSA base    mxpc.example.test (the MX host: its CNAME validated, not "
                      "the expansion mxpz.insecure.test)", out.splitlines())
        # an MX host in an unsigned zone: no DANE, whatever its TLSA record says
        rc, out, err = self.probe("danecninsec.example.test", "--json")
        m = json.loads(out)["mx"][0]
        self.assertEqual((m["expanded_name"], m["host_dnssec"], m["dane"]),
                         ("mxpz2.insecure.test", False, "not checked"), m)
        self.assertNotEqual(m["verdict"], "deliver (DANE)", m)

    def test_probe_partial_cname_failed_lookup_defers_as_delivery(self):
        self.hop("127.0.0.35", "mxa")
        with Responder(self.tmp, "cname-servfail") as resp:
            rc, out, err = self.probe("part.test", "--json", resolver=resp.addr)
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        self.assertEqual((m["verdict"], m["reason"]),
                         ("defer", "CNAME lookup for mx.part.test failed (servfail)"), m)

    def test_probe_unusable_tlsa_dane_and_dane_only(self):
        self.hop("127.0.0.20", "mxj", cert=self.other)
        rc, out, err = self.probe("daneunusable.example.test", "--json")
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        # no authentication from such records: TLS still required, any certificate
        self.assertEqual((m["dane"], m["verdict"]), ("no usable record", "deliver (TLS, unverified)"),
                         m)
        self.assertIn("none usable", m["reason"])
        rc, out, err = self.probe("daneunusable.example.test", "--json",
                                  policies="[policy:daneunusable.example.test]\ntls = dane-only\n")
        m = json.loads(out)["mx"][0]
        self.assertEqual((m["dane"], m["verdict"]), ("no usable record", "defer"), m)

    def test_probe_unusable_tlsa_and_mta_sts_enforce(self):
        # unusable records leave the MTA-STS policy in force (as delivery does)
        bad = self.hop("127.0.0.22", "mxl", cert=self.other)
        rc, out, err = self.probe("stsunusable.example.test", "--json")
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        self.assertEqual((m["dane"], m["verdict"]), ("no usable record", "defer"), m)
        self.assertTrue(m["reason"].startswith("MTA-STS enforce"), m)
        bad.stop()
        self.hops.remove(bad)
        self.hop("127.0.0.22", "mxl")
        rc, out, err = self.probe("stsunusable.example.test", "--json")
        m = json.loads(out)["mx"][0]
        self.assertEqual(m["verdict"], "deliver (MTA-STS)", m)

    def test_probe_mta_sts_testing_says_what_enforce_would_do(self):
        self.hop("127.0.0.23", "mxm", cert=self.other)  # not valid for mxm
        rc, out, err = self.probe("ststest.example.test", "--json")
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        self.assertEqual(m["verdict"], "deliver (TLS, unverified)", m)
        self.assertIn("MTA-STS testing: enforce would defer: ", m["reason"])
        self.hop("127.0.0.11", "mxa")
        rc, out, err = self.probe("ststestx.example.test", "--json")
        m = json.loads(out)["mx"][0]
        self.assertEqual(m["verdict"], "deliver (TLS, verified)", m)
        self.assertIn("MTA-STS testing: enforce would defer: MX host not in the policy",
                      m["reason"])

    def test_probe_failed_tlsa_lookup_defers_as_delivery(self):
        self.hop("127.0.0.21", "mxk", cert=make_cert(self.tmp, "mxk", ["mxk.bogus.test"]))
        rc, out, err = self.probe("tlsafail.bogus.test", "--json")
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["mx"][0]
        self.assertEqual(m["verdict"], "defer", m)
        self.assertTrue(m["reason"].startswith("TLSA lookup failed"), m)

    def test_probe_json_mta_sts_and_wrong_tlsa(self):
        self.hop("127.0.0.16", "mxf")
        rc, out, err = self.probe("stsdane.example.test", "--json")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["mta_sts"]["record"], "id=1")
        self.assertEqual(j["mta_sts"]["mode"], "enforce")
        self.assertEqual(j["mta_sts"]["mx"], ["mxf.example.test"])
        m = j["mx"][0]
        self.assertTrue(m["name_match"])
        self.assertEqual(m["dane"], "no match")
        # DANE fails, and MTA-STS (which would pass) is never the fallback
        self.assertEqual(m["verdict"], "defer")

    def test_probe_text(self):
        self.hop("127.0.0.14", "mxd", cert=self.other)
        rc, out, err = self.probe("dane.example.test")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0], "dane.example.test")
        self.assertIn("MX 10 mxd.example.test", lines)
        rows = {l[2:15].strip(): l[15:] for l in lines if l.startswith("  ") and l[2:15].strip()}
        self.assertEqual(rows["policy"], "tls = dane  ([policy:default])")
        self.assertEqual(rows["STARTTLS"], "offered (127.0.0.14:%d)" % self.mx_port)
        self.assertTrue(rows["TLS"].startswith("TLSv1."), rows)
        self.assertTrue(rows["certificate"].startswith("chain valid; names other.example.test"))
        self.assertTrue(rows["verdict"].startswith("deliver (DANE): DANE-EE(3)"), rows)
        # every value starts in the same column
        self.assertTrue(all(l[15] != " " for l in lines if l.startswith("  ") and len(l) > 15))

    def test_probe_internationalized_domain(self):
        # a UTF-8 domain is probed by its A-labels, as delivery routes it
        # (the wildcard MX under bank.example.test); one that has none is
        # refused as no domain name
        self.hop("127.0.0.60", "mxw", cert=make_cert(self.tmp, "mxw", ["mxw.example.test"]))
        rc, out, err = self.probe("B\u00fccher.bank.example.test.", "--json")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["domain"], "xn--bcher-kva.bank.example.test")
        self.assertEqual(j["mx"][0]["host"], "mxw.example.test")
        rc, out, err = self.probe("a_\u00fc.bank.example.test")
        self.assertEqual(rc, 2)
        self.assertIn("is not a domain name", err)

    def test_probe_null_mx(self):
        rc, out, err = self.probe("nullmx.example.test", "--json")
        self.assertEqual(rc, 1)
        self.assertIn("null MX", json.loads(out)["error"])


class LocalReplies(MxBase):
    """Under route = mx the proxy is the legacy MTA's SMTP server until a
    RCPT names a domain: it answers the session's own commands itself, with
    the replies a strict MTA gives, and reuses one next-hop connection for
    the domain's following transactions."""

    def test_second_message_to_the_same_domain_reuses_the_connection(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        c = self.legacy_client(port, 30)
        for n in (1, 2):
            r = send(port, ["bob%d@d1.example.test" % n], sender="a%d@legacy.example" % n,
                     client=c)
            self.assertEqual((r["rcpt"][0][0], r["data"][0]), (250, 250), (n, r))
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(h.stored()), 2)
        log = h.proc.log()
        self.assertEqual(log.count("hello EHLO"), 2, log)  # one connection: EHLO, STARTTLS, EHLO
        # the second transaction is the remembered MAIL replayed, then its RCPT
        self.assertEqual([l for l in h.commands() if "MAIL" in l or "RCPT" in l],
                         ["command MAIL FROM:<a1@legacy.example> tls=True",
                          "command RCPT TO:<bob1@d1.example.test> tls=True",
                          "command MAIL FROM:<a2@legacy.example> tls=True",
                          "command RCPT TO:<bob2@d1.example.test> tls=True"])
        msgs = [harness.log_fields(l) for l in self.proxy.log_lines("message")]
        self.assertEqual([(m["from"], m["rcpts"], m["result"]) for m in msgs],
                         [("<a1@legacy.example>", "1", "accepted"),
                          ("<a2@legacy.example>", "1", "accepted")], msgs)

    def test_session_commands_answered_locally(self):
        h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        c = Client(port, timeout=30)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        expect = [
            ("MAIL FROM:<a@legacy.example>", "503 5.5.1 Error: send HELO/EHLO first"),
            ("HELO legacy.example", "250 "),
            ("RCPT TO:<bob@d1.example.test>", "503 5.5.1 Error: need MAIL command"),
            ("DATA", "503 5.5.1 Error: need MAIL command"),
            ("MAIL FROM:<a@legacy.example", "501 5.1.7 "),
            ("MAIL FROM:<a@legacy.example> BOGUS=1", "555 5.5.4 "),
            ("MAIL FROM:<a@legacy.example>", "250 2.1.0 Ok"),
            ("MAIL FROM:<b@legacy.example>", "503 5.5.1 Error: nested MAIL command"),
            ("RCPT TO:<bob@d1.example.test> NOTIFY=NEVER", "555 5.5.4 "),
            ("RCPT TO:<bob>", "550 5.1.3 "),
            ("RCPT TO:<bob@d1.example.test", "501 "),
            ("DATA", "554 5.5.1 Error: no valid recipients"),
            ("VRFY bob", "252 2.5.2 "),
            ("EXPN list", "502 5.5.1 "),
            ("HELP", "502 5.5.1 "),
            ("ETRN d1.example.test", "502 5.5.1 "),
            ("AUTH PLAIN AGJvYgBzZWNyZXQ=", "502 5.5.1 "),
            ("NOOP", "250 2.0.0 Ok"),
            ("RSET", "250 2.0.0 Ok"),
            ("DATA", "503 5.5.1 Error: need MAIL command"),
        ]
        for cmd, want in expect:
            code, lines = c.cmd(cmd)
            self.assertTrue(lines[-1].startswith(want), (cmd, lines))
        # HELO asked for no extensions: none offered; EHLO offers the proxy's
        self.assertEqual(c.cmd("HELO legacy.example")[1], ["250 mx.example.test"])
        code, lines = c.cmd("EHLO legacy.example")
        self.assertEqual(code, 250)
        self.assertEqual(lines[1:], ["250-SIZE", "250-8BITMIME", "250-ENHANCEDSTATUSCODES",
                                     "250 SMTPUTF8"])
        # none of it reached (or even contacted) a next hop, and the session still works
        self.assertEqual(h.proc.log().count("hello "), 0, h.proc.log())
        r = send(port, ["bob@d1.example.test"], client=c)
        self.assertEqual(r["data"][0], 250, r)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(len(h.stored()), 1)
