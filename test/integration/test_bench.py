"""Smoke test of the load generator (test/bench/smtp-bench) so it never rots:
it drives real sessions through the proxy to Postfix smtp-sink and must report
every message delivered and no error, in each TLS mode and with resumption."""
import json
import os
import subprocess

from harness import ROOT, Process, Proxy, ProxyCase, free_port, tmpdir, wait_port
import shutil

BENCH = os.path.join(ROOT, "bazel-bin/test/bench/smtp-bench")


class BenchSmoke(ProxyCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        port = free_port()
        self.pf = Process(["smtp-sink", "-u", "nobody", "127.0.0.1:%d" % port, "64"],
                          os.path.join(self.tmp, "smtp-sink.log"), stdout=subprocess.DEVNULL)
        self.addCleanup(self.pf.stop)
        wait_port(port)
        keys = {"backend": "127.0.0.1:%d" % port, "max_connections_per_ip": "100"}
        self.proxy = Proxy(self.tmp, {"in": keys, "smtps": dict(keys, starttls="implicit")})
        self.addCleanup(self.stop_proxy)

    def bench(self, port, *args):
        out = subprocess.run([BENCH, "-j", "-c", "5", "-n", "20"] + list(args) +
                             ["127.0.0.1", str(port)], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout.decode() + out.stderr.decode())
        return json.loads(out.stdout)

    def test_starttls_messages_and_resumption(self):
        r = self.bench(self.proxy.port(), "-m", "3", "-r")
        self.assertEqual((r["sessions"], r["errors"], r["messages"]), (20, 0, 60))
        self.assertGreater(r["resumed"], 0)
        self.assertGreaterEqual(r["bytes"], 60 * 4096)
        self.assertGreater(r["p50_ms"], 0)

    def test_implicit_tls(self):
        r = self.bench(self.proxy.port("smtps"), "-M", "implicit", "-s", "100000")
        self.assertEqual((r["sessions"], r["errors"], r["messages"]), (20, 0, 20))

    def test_errors_are_counted(self):
        # Nobody listens: every session is an error and the exit status says so.
        out = subprocess.run([BENCH, "-j", "-n", "3", "-M", "plain", "127.0.0.1",
                              str(free_port())], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 1)
        r = json.loads(out.stdout)
        self.assertEqual((r["sessions"], r["errors"]), (0, 3))
