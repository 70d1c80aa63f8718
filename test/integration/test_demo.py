"""The README's first command: deploy/demo.sh starts the demo backend and the
proxy, prints how to send a message, and Ctrl-C stops both.

Run with the binary under test (STP_BIN, so no build) and private ports and
directory, in its own process group so "Ctrl-C" reaches exactly the demo's
processes.
"""
import os
import shutil
import signal
import socket
import subprocess
import unittest

from harness import BIN, ROOT, Process, free_port, poll, split_trace, tmpdir


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Demo(unittest.TestCase):
    timeout = 90

    def start_demo(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        self.demo = os.path.join(tmp, "demo")
        self.ports = {"DEMO_SMTP_PORT": free_port(), "DEMO_SMTPS_PORT": free_port(),
                      "DEMO_BACKEND_PORT": free_port()}
        env = dict(os.environ, DEMO_DIR=self.demo, STP_BIN=BIN,
                   **{k: str(v) for k, v in self.ports.items()})
        out_path = os.path.join(tmp, "demo.out")
        with open(out_path, "wb") as out:
            p = Process(["bash", os.path.join(ROOT, "deploy/demo.sh")],
                        os.path.join(tmp, "demo.err"), env=env, stdout=out, own_group=True)
        self.addCleanup(p.stop, signal.SIGTERM)
        started = poll(lambda: " start version=" in p.log() or not p.running(), 60)
        self.assertTrue(started and p.running(), p.log())
        with open(out_path) as f:
            self.printed = f.read()
        with open(os.path.join(self.demo, "backend.pid")) as f:
            self.sink_pid = int(f.read())
        return p

    def assert_stopped(self, p):
        try:
            p.p.wait(40)
        except subprocess.TimeoutExpired:
            self.fail("demo did not stop:\n" + p.log())
        self.assertTrue(poll(lambda: not alive(self.sink_pid), 10), "demo backend still running")
        for port in self.ports.values():
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_send_as_printed_then_ctrl_c(self):
        p = self.start_demo()
        smtp, smtps = self.ports["DEMO_SMTP_PORT"], self.ports["DEMO_SMTPS_PORT"]
        self.assertIn("swaks --server 127.0.0.1:%d --tls" % smtp, self.printed)
        self.assertIn(os.path.join(self.demo, "mail"), self.printed)
        for args in (["--server", "127.0.0.1:%d" % smtp, "--tls"],
                     ["--server", "127.0.0.1:%d" % smtps, "--tlsc"]):
            r = subprocess.run(["swaks"] + args + ["--to", "you@example.test", "--from",
                                                   "me@example.test"],
                               capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
            self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertTrue(poll(lambda: os.path.exists(os.path.join(self.demo, "mail", "0002.eml"))))
        with open(os.path.join(self.demo, "mail", "0001.eml"), "rb") as f:
            trace, _ = split_trace(f.read())
        self.assertIn("with ESMTPS", trace)
        self.assertIn("TLSv1.3", trace)
        # Ctrl-C: SIGINT to the demo's process group, as a terminal does.
        os.killpg(p.pid, signal.SIGINT)
        self.assert_stopped(p)

    def test_sigterm_to_the_script_alone(self):
        p = self.start_demo()
        os.kill(p.pid, signal.SIGTERM)
        self.assert_stopped(p)
        self.assertIn(" stop ", p.log())  # the proxy was stopped, not orphaned
