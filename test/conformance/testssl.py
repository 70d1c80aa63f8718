"""testssl.sh (Debian's testssl.sh package) grades the proxy's TLS on the
STARTTLS listener (--starttls smtp) and the implicit-TLS listener, offline:
--ip and --nodns none keep it from resolving anything, and only the checks
that matter run (-p protocols, -s cipher categories, -R renegotiation,
-C compression/CRIME, -U vulnerabilities without the slow ones), each
connection bounded by --openssl-timeout/--connect-timeout and the whole
run by a timeout. -e lists every accepted cipher with its bits.

The JSON findings (--jsonfile) must show: no SSLv2/SSLv3/TLS 1.0/TLS 1.1,
no cipher category under 128 bits (NULL, aNULL, EXPORT, LOW, 3DES/IDEA),
no compression, no client-initiated renegotiation and no finding of
severity HIGH or CRITICAL. (STARTTLS injection: testssl.sh 3.0 has no such
check; the conformance suite's own starttls_* cases test it.)
The findings' summary is printed (and so lands in the conformance log).
"""
import json
import os
import shutil
import subprocess
import unittest

from cases import note
from harness import Proxy, Sink, tmpdir

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")

# finding id -> what it must say ("not offered", "not vulnerable", ...)
MUST = {
    "SSLv2": "not offered",
    "SSLv3": "not offered",
    "TLS1": "not offered",
    "TLS1_1": "not offered",
    "cipherlist_NULL": "not offered",
    "cipherlist_aNULL": "not offered",
    "cipherlist_EXPORT": "not offered",
    "cipherlist_LOW": "not offered",
    "cipherlist_3DES_IDEA": "not offered",
    "CRIME_TLS": "not vulnerable",
    "secure_client_renego": "not vulnerable",
}


class Testssl(unittest.TestCase):
    timeout = 600

    def grade(self, listener, starttls):
        self.assertTrue(TESTSSL, "testssl.sh is missing (deploy/install-deps.sh installs it)")
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        sink = Sink(tmp)
        self.addCleanup(sink.stop)
        keys = {"backend": "127.0.0.1:%d" % sink.port, "max_connections_per_ip": "1000"}
        if not starttls:
            keys["starttls"] = "implicit"
        proxy = Proxy(tmp, {listener: keys})
        self.addCleanup(proxy.stop)
        out = os.path.join(tmp, "testssl.json")
        argv = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
                "--ip", "127.0.0.1", "--connect-timeout", "5", "--openssl-timeout", "5",
                "--fast", "-p", "-s", "-R", "-C", "-J", "-O", "-Z", "-W", "-F", "-A", "-H", "-I",
                "-T", "-L", "-D", "-e", "--jsonfile", out]
        if starttls:
            argv += ["--starttls", "smtp"]
        argv.append("127.0.0.1:%d" % proxy.port(listener))
        env = dict(os.environ, TERM="dumb")
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=500,
                           env=env, cwd=tmp, start_new_session=True)
        text = r.stdout.decode("utf-8", "replace")
        self.assertTrue(os.path.exists(out), "testssl wrote no JSON:\n" + text[-3000:])
        with open(out) as f:
            findings = json.load(f)
        if os.environ.get("STP_TESTSSL_DUMP"):
            print(json.dumps(findings, indent=1))
        by_id = {}
        for fi in findings:
            by_id.setdefault(fi["id"], []).append(fi)
        summary = []
        for fid, want in MUST.items():
            self.assertIn(fid, by_id, "testssl did not report %s:\n%s" % (fid, text[-3000:]))
            got = by_id[fid][0]["finding"]
            self.assertIn(want, got, "%s: %s" % (fid, got))
        # -e: every cipher the server accepts, "hexcode name kx size enc bits iana"
        ciphers = [fi["finding"].split() for fi in findings if fi["id"].startswith("cipher_x")]
        self.assertTrue(ciphers, "testssl -e listed no cipher:\n" + text[-3000:])
        weak = [c for c in ciphers if int(c[-2]) < 128]
        self.assertEqual(weak, [])
        summary.append("%d ciphers, %d-%d bits" % (len(ciphers), min(int(c[-2]) for c in ciphers),
                                                   max(int(c[-2]) for c in ciphers)))
        for fi in findings:
            self.assertNotIn(fi["severity"], ("HIGH", "CRITICAL"), fi)
        offered = [fid for fid in ("TLS1_2", "TLS1_3")
                   if by_id.get(fid) and by_id[fid][0]["finding"].startswith("offered")]
        sev = {}
        for fi in findings:
            sev[fi["severity"]] = sev.get(fi["severity"], 0) + 1
        summary.insert(0, "offered: %s" % " ".join(offered))
        summary.append("severities: %s" % ", ".join("%s=%d" % kv for kv in sorted(sev.items())))
        for fi in findings:
            if fi["severity"] in ("MEDIUM", "LOW", "WARN"):
                summary.append("%s %s: %s" % (fi["severity"], fi["id"], fi["finding"]))
        print("testssl findings for %s:\n  %s" % (listener, "\n  ".join(summary)))
        self.assertEqual(proxy.stop(), 0)
        note(self, "; ".join(summary[:3]))

    def test_starttls(self):
        self.grade("in", starttls=True)

    def test_implicit(self):
        self.grade("smtps", starttls=False)


if __name__ == "__main__":
    unittest.main()
