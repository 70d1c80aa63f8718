"""Smoke test of the load generator (test/bench/smtp-bench) so it never rots:
it drives real sessions through the proxy to Postfix smtp-sink and must report
every message delivered and no error, in each TLS mode and with resumption."""
import json
import re
import socket
import ssl
import threading
import time
import unittest
import os
import subprocess

from harness import ASAN, BIN, CERTS, ROOT, Process, Proxy, ProxyCase, free_port, tmpdir, wait_port
import shutil
import smtplib

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
        self.sink_port = port
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
        # compare.sh checks that every peer negotiated TLS 1.3 from these
        self.assertEqual(r["tls_version"], "TLSv1.3", r)
        self.assertIn(r["cipher"], ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                    "TLS_CHACHA20_POLY1305_SHA256"), r)

    def test_implicit_tls(self):
        r = self.bench(self.proxy.port("smtps"), "-M", "implicit", "-s", "100000")
        self.assertEqual((r["sessions"], r["errors"], r["messages"]), (20, 0, 20))
        self.assertEqual(r["tls_version"], "TLSv1.3", r)
        # plaintext straight to smtp-sink: no TLS to report
        out = subprocess.run([BENCH, "-c", "2", "-n", "2", "-M", "plain", "127.0.0.1",
                              str(self.sink_port)], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"\ntls none cipher none\n", out.stdout)

    def test_pipelining(self):
        r = self.bench(self.proxy.port(), "-P", "-m", "3")
        self.assertEqual((r["sessions"], r["errors"], r["messages"]), (20, 0, 60))
        # -P really sends the envelope in one write (seen in its system calls)
        trace = os.path.join(self.tmp, "bench.strace")
        out = subprocess.run(["strace", "-f", "-e", "trace=write,writev,sendmsg,sendto", "-s", "200",
                              "-o", trace, BENCH, "-j", "-c", "1", "-n", "1", "-P", "-M", "plain",
                              "127.0.0.1", str(self.sink_port)], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        with open(trace) as f:
            calls = [l for l in f if "MAIL FROM" in l]
        self.assertEqual(len(calls), 1, calls)
        self.assertIn(r'MAIL FROM:<bench@example.test>\r\nRCPT TO:<sink@example.test>\r\nDATA\r\n',
                      calls[0])

    def test_errors_are_counted(self):
        # Nobody listens: every session is an error and the exit status says so.
        out = subprocess.run([BENCH, "-j", "-n", "3", "-M", "plain", "127.0.0.1",
                              str(free_port())], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 1)
        r = json.loads(out.stdout)
        self.assertEqual((r["sessions"], r["errors"]), (0, 3))


def server_ctx(maximum=None, ciphers=None):
    """A TLS server context with the test certificate for mx.example.test."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(CERTS, "ecdsa.pem"), os.path.join(CERTS, "ecdsa.key"))
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


class FakeSMTP:
    """A scripted SMTP server for smtp-bench on 127.0.0.1 (an ephemeral port),
    one thread per connection, stopped by the test's cleanup. It answers like
    a sink (STARTTLS too when given an ssl context) and records every command
    line (`commands`) and every message's content (`messages`: the bytes
    before the final ".\\r\\n", dot-stuffing undone, as a receiver stores them).
    silent="connect" accepts and never says a word, "STARTTLS" stops after its
    220 (no handshake), "body" after reading a message (no reply to it);
    quit="close" closes the connection on QUIT without the 221; delay waits
    that long before each reply. The server names clients ask for in TLS are
    in `snis` (None: no SNI)."""

    def __init__(self, test, silent=None, quit="221", tls=None, delay=0, host="127.0.0.1"):
        self.silent, self.quit, self.tls, self.delay = silent, quit, tls, delay
        self.commands, self.messages, self.conns, self.snis = [], [], [], []
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.snis.append(name)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept_loop, daemon=True).start()
        test.addCleanup(self.close)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            c.close()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            self.session(c)
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    def hush(self, c, step):
        """True (once the client has gone) if the server is silent from this step."""
        if self.silent != step:
            return False
        while c.recv(4096):
            pass
        return True

    def session(self, c):
        if self.hush(c, "connect"):
            return
        f = c.makefile("rb")

        def reply(text):
            time.sleep(self.delay)
            c.sendall(text.encode() + b"\r\n")

        reply("220 fake ESMTP")
        while True:
            line = f.readline()
            if not line:
                return
            self.commands.append(line.decode(errors="replace").rstrip("\r\n"))
            verb = line[:4].upper()
            if verb == b"EHLO":
                tls = self.tls is not None and not isinstance(c, ssl.SSLSocket)
                reply("250-fake\r\n250-PIPELINING\r\n250 " + ("STARTTLS" if tls else "8BITMIME"))
            elif verb == b"STAR" and self.tls is not None:
                reply("220 go ahead")
                if self.hush(c, "STARTTLS"):
                    return
                c = self.tls.wrap_socket(c, server_side=True)
                self.conns.append(c)
                f = c.makefile("rb")
            elif verb == b"DATA":
                reply("354 go ahead")
                lines = []
                while True:
                    line = f.readline()
                    if not line:
                        return
                    if line == b".\r\n":
                        break
                    lines.append(line[1:] if line.startswith(b".") else line)
                self.messages.append(b"".join(lines))
                if self.hush(c, "body"):
                    return
                reply("250 queued")
            elif verb == b"QUIT":
                if self.quit == "221":
                    reply("221 bye")
                elif isinstance(c, ssl.SSLSocket):
                    c.unwrap()  # close_notify, then the close
                return
            else:
                reply("250 ok")


class BenchSmokeFake(unittest.TestCase):
    """smtp-bench against small scripted servers (FakeSMTP): what it counts as
    a success or an error, and what it sends."""

    def run_bench(self, port, *args, timeout=30, host="127.0.0.1"):
        out = subprocess.run([BENCH, "-j"] + list(args) + [host, str(port)],
                             capture_output=True, timeout=timeout)
        return out.returncode, json.loads(out.stdout), out.stderr.decode()

    def test_no_success_without_the_221(self):
        # The server closes on QUIT without replying: every session is an error.
        fake = FakeSMTP(self, quit="close")
        rc, r, err = self.run_bench(fake.port, "-n", "3", "-c", "1", "-M", "plain")
        self.assertEqual(rc, 1, err)
        self.assertEqual((r["sessions"], r["errors"], r["messages"]), (0, 3, 3), r)
        self.assertIn("3 sessions failed at quit", err)
        # The same inside TLS, where the server's close_notify ends the session.
        fake = FakeSMTP(self, quit="close", tls=server_ctx())
        rc, r, err = self.run_bench(fake.port, "-n", "3", "-c", "1")
        self.assertEqual(rc, 1, err)
        self.assertEqual((r["sessions"], r["errors"], r["messages"]), (0, 3, 3), r)
        self.assertIn("3 sessions failed at quit", err)


    def test_a_stalled_step_times_out(self):
        # A server that accepts and never greets: -T 1 gives every session up
        # (subprocess's timeout catches a bench that would wait forever).
        fake = FakeSMTP(self, silent="connect")
        rc, r, err = self.run_bench(fake.port, "-n", "3", "-c", "2", "-T", "1", timeout=20)
        self.assertEqual(rc, 1, err)
        self.assertEqual((r["sessions"], r["errors"], r["timeouts"]), (0, 3, 3), r)
        self.assertIn("3 sessions failed at greeting (3 timed out after 1 s)", err)
        # ... and one that stalls after the message body, or at the handshake.
        fake = FakeSMTP(self, silent="body", tls=server_ctx())
        rc, r, err = self.run_bench(fake.port, "-n", "2", "-c", "2", "-T", "1", timeout=20)
        self.assertEqual((rc, r["sessions"], r["errors"], r["messages"]), (1, 0, 2, 0), err)
        self.assertIn("2 sessions failed at body (2 timed out after 1 s)", err)
        self.assertEqual(len(fake.messages), 2)
        fake = FakeSMTP(self, silent="STARTTLS", tls=server_ctx())
        rc, r, err = self.run_bench(fake.port, "-n", "1", "-T", "1", timeout=20)
        self.assertEqual((rc, r["errors"]), (1, 1), err)
        self.assertIn("1 sessions failed at handshake (1 timed out after 1 s)", err)

    def test_the_timeout_is_per_step(self):
        # Each reply comes 0.4 s late: the session (seven replies) takes longer
        # than -T 1, but no step does.
        fake = FakeSMTP(self, delay=0.4)
        rc, r, err = self.run_bench(fake.port, "-n", "1", "-M", "plain", "-T", "1", timeout=20)
        self.assertEqual((rc, r["sessions"], r["errors"]), (0, 1, 0), err)
        self.assertGreater(r["seconds"], 2.5)

    def test_tls_version_and_cipher_are_reported(self):
        # What the handshake negotiated, not a constant: a TLS 1.2 server.
        fake = FakeSMTP(self, tls=server_ctx(maximum=ssl.TLSVersion.TLSv1_2,
                                             ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
        rc, r, err = self.run_bench(fake.port, "-n", "2", "-c", "1")
        self.assertEqual((rc, r["sessions"]), (0, 2), err)
        self.assertEqual((r["tls_version"], r["cipher"]),
                         ("TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), r)
        out = subprocess.run([BENCH, "-n", "1", "127.0.0.1", str(fake.port)],
                             capture_output=True, timeout=30)
        self.assertIn(b"\ntls TLSv1.2 cipher TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n", out.stdout)

    def test_message_size_is_exact(self):
        # -s is the content as the receiver stores it: CRLF lines, without the
        # final ".\r\n"; "bytes" counts that content and nothing else. 71 is
        # the header alone, 72 one more (no line is one byte), 150 a full line
        # and one short of another.
        fake = FakeSMTP(self)
        for size in (0, 2, 3, 70, 71, 72, 73, 148, 149, 150, 151, 4096):
            with self.subTest(size=size):
                del fake.messages[:]
                rc, r, err = self.run_bench(fake.port, "-n", "1", "-m", "2", "-M", "plain",
                                            "-s", str(size))
                self.assertEqual((rc, r["messages"], r["bytes"]), (0, 2, 2 * size), err)
                self.assertEqual([len(m) for m in fake.messages], [size, size])
                if size:
                    self.assertTrue(fake.messages[0].endswith(b"\r\n"))
                    self.assertNotIn(b"\r\n.", fake.messages[0])
                if size >= 71:
                    self.assertTrue(fake.messages[0].startswith(b"From: <bench@example.test>"))
        out = subprocess.run([BENCH, "-s", "1", "127.0.0.1", str(fake.port)],
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn(b"-s 1: message content ends in CRLF", out.stderr)

    def test_envelope_ehlo_name_and_sni_are_options(self):
        fake = FakeSMTP(self, tls=server_ctx())
        rc, r, err = self.run_bench(fake.port, "-n", "1")
        self.assertEqual((rc, r["sessions"]), (0, 1), err)
        self.assertEqual(fake.snis, ["mx.example.test"])  # the defaults stay
        self.assertEqual(fake.commands[:4], ["EHLO bench.example.test", "STARTTLS",
                                             "EHLO bench.example.test",
                                             "MAIL FROM:<bench@example.test>"])
        for pipelined in ([], ["-P"]):
            del fake.commands[:], fake.snis[:], fake.messages[:]
            rc, r, err = self.run_bench(fake.port, "-n", "1", "-f", "admin@gw.example.org", "-t",
                                        "postmaster@gw.example.org", "-e", "tester.example.org",
                                        "-S", "gw.example.org", *pipelined)
            self.assertEqual((rc, r["sessions"], r["messages"]), (0, 1, 1), err)
            self.assertEqual(fake.snis, ["gw.example.org"])
            self.assertEqual(fake.commands, ["EHLO tester.example.org", "STARTTLS",
                                             "EHLO tester.example.org",
                                             "MAIL FROM:<admin@gw.example.org>",
                                             "RCPT TO:<postmaster@gw.example.org>", "DATA", "QUIT"])
            self.assertTrue(fake.messages[0].startswith(
                b"From: <admin@gw.example.org>\r\nTo: <postmaster@gw.example.org>\r\n"))
            self.assertEqual(r["bytes"], 4096)
        del fake.snis[:]
        rc, r, err = self.run_bench(fake.port, "-n", "1", "-S", "")  # no SNI at all
        self.assertEqual((rc, fake.snis), (0, [None]), err)
        for bad in (["-t", "a@b.test>\r\nDATA"], ["-f", "x" * 256], ["-e", ""]):
            out = subprocess.run([BENCH] + bad + ["127.0.0.1", str(fake.port)],
                                 capture_output=True, timeout=30)
            self.assertEqual(out.returncode, 2, bad)
            self.assertIn(b"one word of at most 255 bytes", out.stderr)

    def test_host_may_be_a_name(self):
        # "localhost" is looked up (the fake listens on the address it comes
        # to first, as the bench's getaddrinfo sees it); IPv6 literals work too.
        first = socket.getaddrinfo("localhost", 25, 0, socket.SOCK_STREAM)[0][4][0]
        fake = FakeSMTP(self, host=first)
        rc, r, err = self.run_bench(fake.port, "-n", "2", "-M", "plain", host="localhost")
        self.assertEqual((rc, r["sessions"], r["errors"]), (0, 2, 0), err)
        try:
            fake6 = FakeSMTP(self, host="::1")
        except OSError:
            return  # no IPv6 loopback here
        rc, r, err = self.run_bench(fake6.port, "-n", "1", "-M", "plain", host="::1")
        self.assertEqual((rc, r["sessions"]), (0, 1), err)

class CompareQuick(unittest.TestCase):
    """test/bench/compare.sh --quick runs every peer end to end (smtp-sink,
    the bare sink, nginx, stunnel in both modes, the proxy inbound, outbound
    and chained) and prints the table and one line per target ratio. Only the
    shape is checked: the numbers are the benchmark's business, not the test's."""

    timeout = 240  # seconds (run.py's per-test limit); a quick run takes about a minute

    RATIOS = ["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b", "4c", "5a", "5b", "6a", "6b"]
    PEERS = ["plain", "bare", "nginx", "stunnel", "proxy", "stunnel_client", "proxy_out", "out_cached",
             "chain"]

    def test_quick_run_prints_every_peer_and_ratio(self):
        env = dict(os.environ, STP_BENCH=BENCH, STP_BIN=BIN, STP_CERTS=CERTS)
        out = subprocess.run(["bash", os.path.join(ROOT, "test/bench/compare.sh"), "--quick",
                              "--rounds", "2"],
                             capture_output=True, timeout=240, env=env)
        text = out.stdout.decode()
        self.assertEqual(out.returncode, 0, text + out.stderr.decode())
        rows = {l.split()[0]: l.split() for l in text.splitlines() if l.strip()}
        for peer in self.PEERS:
            self.assertIn(peer, rows, text)
            self.assertEqual(len(rows[peer]), 15, rows[peer])
        # Throughput was measured for every peer (no "-" in sessions/s).
        for peer in self.PEERS:
            self.assertGreater(float(rows[peer][5]), 0, rows[peer])
        ratios = [l for l in text.splitlines() if l.startswith("ratio ")]
        self.assertEqual([l.split()[1] for l in ratios], self.RATIOS, text)
        # The latency at concurrency 1 was measured (column p50ms c=1).
        for peer in ("proxy", "nginx", "bare"):
            self.assertGreater(float(rows[peer][10]), 0, rows[peer])
        for line in ratios:
            # A memory ratio may be negative: with --quick's few idle sessions
            # (and under ASan) the process can hold less than before them.
            self.assertRegex(line, r"\s-?[0-9]+\.[0-9]{3}\s+\((<=|>=) [0-9.]+\)\s+(PASS|FAIL)(  rounds:( [0-9.]+)+)?$")
            # Ratios of loads are taken round by round (two here), the
            # memory ratios once; the median is the middle of the rounds'.
            per_round = re.findall(r"[0-9.]+", line.split("rounds:")[1]) if "rounds:" in line else []
            self.assertEqual(len(per_round), 0 if line.split()[1].startswith("4") else 2, line)
            if per_round:
                median = float(re.search(r"\s([0-9]+\.[0-9]{3})\s+\(", line).group(1))
                self.assertAlmostEqual(median, sum(map(float, per_round)) / 2, delta=0.0015)
        self.assertIn("(each figure the median of 2 rounds)", text)
        # The connection cache saved handshakes: fewer than sessions.
        m = re.search(r"connection_cache_time = 2s: ([0-9]+) TLS handshakes with the next hop for "
                      r"([0-9]+) sessions; cpu/session [0-9.]+ x proxy_out", text)
        self.assertIsNotNone(m, text)
        self.assertLess(int(m.group(1)) * 2, int(m.group(2)), m.group(0))


class Profile(unittest.TestCase):
    """test/bench/profile.sh drives sessions through the proxy under perf
    and under callgrind and prints where the time went: every session must
    have been relayed, and the profile must show the handshake's crypto
    (X25519 is in every session) next to the proxy's own code."""

    timeout = 240

    def profile(self, *args):
        env = dict(os.environ, STP_BENCH=BENCH, STP_BIN=BIN, STP_CERTS=CERTS)
        out = subprocess.run(["bash", os.path.join(ROOT, "test/bench/profile.sh")] + list(args),
                             capture_output=True, timeout=220, env=env)
        text = out.stdout.decode()
        self.assertEqual(out.returncode, 0, text + out.stderr.decode())
        load = json.loads(re.search(r"^load: (\{.*\})$", text, re.M).group(1))
        self.assertEqual(load["errors"], 0, load)
        return text, load

    def test_callgrind_counts_instructions_per_session(self):
        if ASAN:
            # valgrind cannot run a sanitizer build: a clear refusal (the
            # normal pass profiles the proxy); the bare sink is not one.
            env = dict(os.environ, STP_BENCH=BENCH, STP_BIN=BIN, STP_CERTS=CERTS)
            out = subprocess.run(["bash", os.path.join(ROOT, "test/bench/profile.sh"),
                                  "--callgrind", "-n", "5"], capture_output=True, timeout=60, env=env)
            self.assertEqual(out.returncode, 2, out)
            self.assertIn(b"is a sanitizer build, which valgrind cannot run", out.stderr)
            return self.check_bare()
        text, load = self.profile("--callgrind", "-n", "40")
        self.assertEqual(load["sessions"], 40)
        m = re.search(r"^instructions per session: ([0-9]+) \(([0-9]+) over 40 sessions\)$", text, re.M)
        self.assertIsNotNone(m, text)
        # A TLS 1.3 handshake with ECDSA P-256 alone is millions of instructions.
        self.assertGreater(int(m.group(1)), 1000000, text)
        top = text.split("top functions")[1]
        self.assertIn("X25519", top)
        self.check_bare()

    def check_bare(self):
        # The floor, profiled the same way: the bare sink's own code shows.
        text, load = self.profile("--callgrind", "--bare", "-n", "20")
        self.assertEqual((load["sessions"], load["errors"]), (20, 0))
        self.assertRegex(text, r"instructions per session: [0-9]{7,} ")
        self.assertIn("smtp-bench", text.split("share of the instructions by object:")[1])
        self.assertIn("the bare sink, 20 sessions", text)

    def test_perf_shares_by_object(self):
        text, load = self.profile("--perf", "-n", "300")
        self.assertEqual(load["sessions"], 300)
        shares = text.split("share of the samples by object:")[1].split("top symbols:")[0]
        self.assertIn("libcrypto", shares)
        self.assertRegex(shares, r"\[kernel")
        self.assertIn("top symbols:", text)

    def test_perf_outbound(self):
        # The outbound direction: plaintext in, TLS to a bare sink, resumed
        # after the first session; the proxy's side of it is profiled.
        text, load = self.profile("--perf", "--outbound", "-n", "200")
        self.assertEqual((load["sessions"], load["messages"]), (200, 200))
        shares = text.split("share of the samples by object:")[1].split("top symbols:")[0]
        self.assertIn("libcrypto", shares)  # the proxy originated TLS
        self.assertIn("the proxy outbound, 200 sessions", text)
        env = dict(os.environ, STP_BENCH=BENCH, STP_BIN=BIN, STP_CERTS=CERTS)
        out = subprocess.run(["bash", os.path.join(ROOT, "test/bench/profile.sh"), "--bare",
                              "--outbound"], capture_output=True, timeout=30, env=env)
        self.assertEqual(out.returncode, 2, out)
        self.assertIn(b"--bare or --outbound, not both", out.stderr)


class BareSinkEndOfData(unittest.TestCase):
    """The bare sink (smtp-bench -L, the floor of compare.sh) finds a
    message's end, CRLF.CRLF, wherever the reads split it, and nothing that
    merely looks like it ends the message."""

    def setUp(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        self.sink = Process([BENCH, "-L", "-M", "plain", "127.0.0.1", str(port)],
                            os.path.join(tmp, "sink.log"), stdout=subprocess.DEVNULL)
        self.addCleanup(self.sink.stop)
        wait_port(port)
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(self.s.close)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")
        self.assertTrue(self.f.readline().startswith(b"220"))
        self.s.sendall(b"EHLO t\r\n")
        while not self.f.readline().startswith(b"250 "):
            pass

    def reply(self):
        return self.f.readline()

    def no_reply(self):
        self.s.settimeout(0.3)
        try:
            self.assertEqual(self.s.recv(1, socket.MSG_PEEK), b"")
        except socket.timeout:
            pass
        finally:
            self.s.settimeout(5)

    def test_end_split_at_every_byte(self):
        end = b"\r\n.\r\n"
        for k in range(len(end)):
            self.s.sendall(b"MAIL FROM:<a@t>\r\nRCPT TO:<b@t>\r\nDATA\r\n")
            for want in (b"250", b"250", b"354"):
                self.assertTrue(self.reply().startswith(want))
            body = b"a\r\n..dot\r\n.\rx\r\n\r\n.x\r\n" + b"z" * 70000 + b"\r\nlast"
            self.s.sendall(body + end[:k])
            self.no_reply()  # the first part, near misses included, is not the end
            self.s.sendall(end[k:] + b"RSET\r\n")
            self.assertEqual(self.reply(), b"250 2.0.0 Ok: queued\r\n", k)
            self.assertEqual(self.reply(), b"250 2.0.0 Ok\r\n", k)

    def test_end_a_byte_a_read(self):
        self.s.sendall(b"MAIL FROM:<a@t>\r\nRCPT TO:<b@t>\r\nDATA\r\n")
        for want in (b"250", b"250", b"354"):
            self.assertTrue(self.reply().startswith(want))
        self.s.sendall(b"body")
        for byte in b"\r\n.\r":
            self.s.sendall(bytes([byte]))
            self.no_reply()
        self.s.sendall(b"\n")
        self.assertEqual(self.reply(), b"250 2.0.0 Ok: queued\r\n")

    def test_end_right_after_data(self):
        self.s.sendall(b"MAIL FROM:<a@t>\r\nRCPT TO:<b@t>\r\nDATA\r\n")
        for want in (b"250", b"250", b"354"):
            self.assertTrue(self.reply().startswith(want))
        self.s.sendall(b".\r\nQUIT\r\n")  # an empty message: the CRLF before it is DATA's
        self.assertEqual(self.reply(), b"250 2.0.0 Ok: queued\r\n")
        self.assertTrue(self.reply().startswith(b"221"))


class OutboundResumption(unittest.TestCase):
    """The proxy resumes its TLS sessions with a next hop (tickets kept per
    next hop, name and policy), and a resumed session is still verified: the
    next hop is smtp-bench's bare sink, which counts resumed handshakes."""

    def test_second_and_later_sessions_resume_and_stay_verified(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        sink = Process([BENCH, "-L", "-C", os.path.join(CERTS, "ecdsa.pem"), "-K",
                        os.path.join(CERTS, "ecdsa.key"), "127.0.0.1", str(port)],
                       os.path.join(tmp, "sink.log"), stdout=subprocess.DEVNULL)
        self.addCleanup(sink.stop)
        wait_port(port)
        proxy = Proxy(tmp, {"out": {
            "mode": "outbound", "route": "relay:127.0.0.1:%d" % port, "tls": "verify",
            "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem")}})
        self.addCleanup(proxy.proc.stop)
        for i in range(3):
            with smtplib.SMTP("127.0.0.1", proxy.port("out"), timeout=10) as c:
                c.ehlo("legacy.example")
                c.sendmail("a@example.test", ["b@example.test"], "Subject: %d\r\n\r\nhi\r\n" % i)
        self.assertEqual(sink.stop(), 0)
        self.assertIn("sink handshakes 3 resumed 2", sink.log())
        self.assertEqual(proxy.stop(), 0, proxy.log())
        hops = proxy.log_lines("next_hop")
        self.assertEqual(len(hops), 3, proxy.log())
        for line in hops:
            self.assertIn("verify=ok", line)
            self.assertIn("decision=tls", line)
