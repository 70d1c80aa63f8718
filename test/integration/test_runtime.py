"""The daemon at run time: worker threads sharing the load and the limits,
draining at SIGTERM within shutdown_grace, and dropping root after binding."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import ProxyCase, poll


def accepts_by_worker(log):
    """Worker ids of the debug `accept` lines, counted."""
    counts = {}
    for m in re.finditer(r" accept listener=\S+ worker=(\d+)", log):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1:]
    return None


class TwoWorkers(ProxyCase):
    proxy_extra = {"workers": "2", "log_level": "debug"}
    listeners = {"in": {"max_connections_per_ip": "50"}}

    def test_threads_exist_and_both_accept(self):
        # The listening sockets accept (into their backlog) before the
        # worker threads exist: the threads may appear a moment later.
        task_dir = "/proc/%d/task" % self.proxy.pid
        poll(lambda: len(os.listdir(task_dir)) >= 3)
        tasks = os.listdir(task_dir)
        self.assertGreaterEqual(len(tasks), 3, tasks)  # main + 2 workers
        self.assertIn("workers=2", self.proxy.log_lines("start")[0])
        # Sessions from many source ports: SO_REUSEPORT hashes the 4-tuple,
        # so 40 connections land on both sockets (chance of one: 2^-39).
        for i in range(40):
            c = self.client()
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("QUIT")[0], 221)
            c.close()
        counts = poll(lambda: (lambda n: len(n) == 2 and n)(accepts_by_worker(self.proxy.log())),
                      5) or accepts_by_worker(self.proxy.log())
        self.assertEqual(sorted(counts), ["0", "1"], counts)
        self.assertEqual(sum(counts.values()), 40, counts)

    def test_messages_through_both_workers(self):
        for i in range(10):
            c = self.ready_client(tls=(i % 2 == 0))
            self.assertEqual(self.send_message(c)[0], 250)
            c.cmd("QUIT")
            c.close()
        self.messages(10)


class PerIpAcrossWorkers(ProxyCase):
    proxy_extra = {"workers": "2", "log_level": "debug"}
    listeners = {"in": {"max_connections_per_ip": "3", "max_connections": "100"}}

    def test_cap_holds_whatever_worker_accepts(self):
        admitted, refused = [], []
        for i in range(24):  # both workers see some (all on one: 2^-23)
            c = self.client()
            code, lines = c.reply()
            (admitted if code == 220 else refused).append((c, lines))
        self.assertEqual(len(admitted), 3, [l for _, l in refused])
        for _, lines in refused:
            self.assertTrue(lines[0].startswith("421 4.7.0"), lines)
        counts = accepts_by_worker(self.proxy.log())
        self.assertEqual(sorted(counts), ["0", "1"], counts)  # both workers took part
        # Slots come back when a session ends, wherever it ran.
        for c, _ in admitted:
            c.cmd("QUIT")
            c.close()

        def three_again():
            cs = [self.client() for _ in range(3)]
            ok = all(c.reply()[0] == 220 for c in cs)
            for c in cs:
                c.close()
            return ok
        self.assertTrue(poll(three_again, 5))


class Drain(ProxyCase):
    proxy_extra = {"workers": "2", "shutdown_grace": "4s"}

    def test_inflight_message_completes_new_connections_refused(self):
        busy = self.ready_client()
        self.assertEqual(busy.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(busy.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(busy.cmd("DATA")[0], 354)
        busy.send(b"Subject: drain\r\n\r\nfirst half\r\n")
        os.kill(self.proxy.pid, signal.SIGTERM)
        self.assertTrue(poll(lambda: " stop signal=TERM" in self.proxy.log(), 5))
        # No new connection is accepted once the signal is seen.
        def refused():
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", self.proxy.port()))
                data = s.recv(100)
                return data == b"" or data.startswith(b"421")
            except OSError:
                return True
            finally:
                s.close()
        self.assertTrue(poll(refused, 5))
        # A reload asked for while stopping is not done, and says so
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: 'reload result=ignored reason="stopping" trigger=signal'
                             in self.proxy.log(), 5), self.proxy.log())
        # The message in flight still completes...
        busy.send(b"second half\r\n.\r\n")
        code, lines = busy.reply()
        self.assertEqual(code, 250, lines)
        # ...and the session, idle now, is told 421 4.3.2 without a command.
        code, lines = busy.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.3.2"), lines)
        self.assertTrue(busy.closed())
        self.assertIn(b"second half", self.messages(1)[0])
        self.assertTrue(poll(lambda: not self.proxy.proc.running(), 10))  # exits by itself
        self.assertEqual(self.proxy.proc.stop(), 0)
        self.proxy = None

    def test_idle_session_told_421_4_3_2(self):
        idle = self.ready_client()
        t0 = time.time()
        os.kill(self.proxy.pid, signal.SIGTERM)
        code, lines = idle.reply()
        # at once: not at a next command (none is sent), not at the grace end
        self.assertLess(time.time() - t0, 2.5)
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.3.2"), lines)
        self.assertTrue(idle.closed())
        self.assertTrue(poll(lambda: not self.proxy.proc.running(), 10))
        self.assertEqual(self.proxy.proc.stop(), 0)
        self.proxy = None

    def test_session_stuck_past_grace_is_closed(self):
        stuck = self.ready_client()
        self.assertEqual(stuck.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(stuck.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(stuck.cmd("DATA")[0], 354)
        stuck.send(b"Subject: slow\r\n\r\nnever finished\r\n")
        t0 = time.time()
        os.kill(self.proxy.pid, signal.SIGTERM)
        self.assertTrue(stuck.closed(10))
        elapsed = time.time() - t0
        self.assertGreaterEqual(elapsed, 3.5)  # the 4s grace was given
        self.assertLess(elapsed, 10)
        self.assertTrue(poll(lambda: not self.proxy.proc.running(), 10))
        self.assertIn("grace period over", self.proxy.log())
        self.assertEqual(self.sink.messages(), [])  # never half a message
        self.assertEqual(self.proxy.proc.stop(), 0)
        self.proxy = None


@__import__("unittest").skipUnless(os.geteuid() == 0, "needs root to drop privileges")
class DropPrivileges(ProxyCase):
    proxy_extra = {"user": "nobody", "group": "nogroup", "workers": "2"}

    def test_runs_as_nobody_and_serves(self):
        import pwd, grp
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        self.assertEqual(proc_status(self.proxy.pid, "Uid"), [str(uid)] * 4)
        self.assertEqual(proc_status(self.proxy.pid, "Gid"), [str(gid)] * 4)
        self.assertEqual(proc_status(self.proxy.pid, "Groups"), [str(gid)])
        for t in os.listdir("/proc/%d/task" % self.proxy.pid):  # every thread too
            with open("/proc/%d/task/%s/status" % (self.proxy.pid, t)) as f:
                self.assertIn("Uid:\t%d\t%d\t%d\t%d" % ((uid,) * 4), f.read())
        self.assertNotIn("still running as root", self.proxy.log())
        c = self.ready_client()
        self.assertEqual(self.send_message(c)[0], 250)
        self.messages(1)


@__import__("unittest").skipUnless(os.geteuid() == 0, "needs root to drop privileges")
class CertificatesOnlyRootCanRead(ProxyCase):
    """Certificates in a directory only root may enter, and user = nobody:
    loaded as root at start, but the user the proxy runs as can neither
    reload nor watch them. Said at start; no reload that could only fail;
    picked up once the directory is opened."""

    def setUp(self):
        import shutil
        from harness import CERTS, Proxy
        self.tmp = harness.tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.hidden = os.path.join(self.tmp, "hidden")
        os.mkdir(self.hidden, 0o700)
        for n in ("ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key"):
            shutil.copy(os.path.join(CERTS, n), self.hidden)
            os.chmod(os.path.join(self.hidden, n), 0o644)
        os.chmod(self.tmp, 0o711)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.proxy = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % self.sink.port}},
                           tls=self.hidden, proxy_extra={"user": "nobody", "group": "nogroup"})
        self.addCleanup(self.stop_proxy)

    def test_said_at_start_and_picked_up_when_readable(self):
        log = self.proxy.log()
        for n in ("ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key"):
            self.assertIn('%s/%s" watched=no error="Permission denied"' % (self.hidden, n), log)
        self.assertIn('%s/ecdsa.pem" error="cannot be read"' % self.hidden, log)
        c = self.ready_client()  # the certificates loaded as root serve
        self.assertEqual(self.send_message(c)[0], 250)
        os.chmod(self.proxy.ini, 0o644)  # the reload reads it as nobody too
        os.chmod(self.hidden, 0o755)
        self.assertTrue(poll(lambda: " reload result=" in self.proxy.log(), 15),
                        self.proxy.log()[-2000:])
        log = self.proxy.log()
        self.assertIn("trigger=certificate-files", log)
        self.assertIn(" reload result=ok", log)
        self.assertNotIn(" reload result=failed", log)
        self.assertEqual(log.count(" changed=yes"), 4, log[-3000:])  # each file once, now seen


@__import__("unittest").skipUnless(os.geteuid() == 0, "needs root to add a user and drop to it")
class KeyThroughSupplementaryGroup(ProxyCase):
    """The key is shared with the proxy's user through a group it is a member
    of (Debian's ssl-cert way): a directory root:GROUP 0710, the key 0640.
    The drop keeps the user's supplementary groups, so the certificates are
    watched and a reload reads them (setgroups(1, primary) left only the
    primary group: "Permission denied" at the reload)."""

    def setUp(self):
        import grp, shutil
        from harness import CERTS, Proxy
        self.tmp = harness.tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        name = "stpk%d" % os.getpid()
        subprocess.run(["groupadd", "--system", name], check=True)
        self.addCleanup(subprocess.run, ["groupdel", name], stderr=subprocess.DEVNULL)
        subprocess.run(["useradd", "--system", "--no-create-home", "--no-user-group",
                        "--gid", "nogroup", "--groups", name, "--shell", "/usr/sbin/nologin",
                        name], check=True)
        self.addCleanup(subprocess.run, ["userdel", name], stderr=subprocess.DEVNULL)
        self.gid = grp.getgrnam(name).gr_gid
        keys = os.path.join(self.tmp, "keys")
        os.mkdir(keys)
        for n in ("ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key"):
            shutil.copy(os.path.join(CERTS, n), keys)
            os.chown(os.path.join(keys, n), 0, self.gid)
            os.chmod(os.path.join(keys, n), 0o640)
        os.chown(keys, 0, self.gid)
        os.chmod(keys, 0o710)
        os.chmod(self.tmp, 0o711)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.proxy = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % self.sink.port}},
                           tls=keys, proxy_extra={"user": name})
        self.addCleanup(self.stop_proxy)
        os.chmod(self.proxy.ini, 0o644)  # the reload reads it as the user too

    def test_reload_reads_the_key_through_the_group(self):
        self.assertIn(str(self.gid), proc_status(self.proxy.pid, "Groups"))
        log = self.proxy.log()
        self.assertIn(" privileges user=stpk", log)
        self.assertIn(str(self.gid), log.split(" privileges ")[1].split("\n")[0])
        self.assertNotIn("Permission denied", log)
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=" in self.proxy.log(), 15),
                        self.proxy.log()[-2000:])
        log = self.proxy.log()
        self.assertIn(" reload result=ok", log)
        self.assertNotIn("Permission denied", log)
        c = self.ready_client()
        self.assertEqual(self.send_message(c)[0], 250)


class HupDuringStartUp(unittest.TestCase):
    """A SIGHUP while the proxy is still starting (here: its start-up DANE
    check waits dns_timeout for a resolver that never answers) used to end it
    at once, killed by the signal with no line logged (systemd counts that a
    clean exit and does not restart it). Now it starts and reloads once it
    runs."""

    def test_starts_and_reloads(self):
        import shutil
        tmp = harness.tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a resolver that never answers
        mute.bind(("127.0.0.1", 0))
        self.addCleanup(mute.close)
        port = harness.free_port()
        ini = os.path.join(tmp, "p.ini")
        with open(ini, "w") as f:
            f.write("[proxy]\nhostname = mx.example.test\nresolver = 127.0.0.1:%d\n"
                    "dns_timeout = 3s\nlog_level = info\n"
                    "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:%d\nroute = mx\n"
                    % (mute.getsockname()[1], port))
        p = harness.Process([harness.BIN, "-c", ini], ini + ".log")
        self.addCleanup(p.stop)
        self.assertTrue(poll(lambda: "fd_limit" in p.log(), 10), p.log())
        self.assertNotIn(" start version=", p.log())  # still waiting for the resolver
        os.kill(p.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=" in p.log() or not p.running(), 15),
                        p.log())
        self.assertTrue(p.running(), p.log())
        log = p.log()
        self.assertIn(" start version=", log)
        self.assertIn('signal name=HUP result=reload reason="received during start-up"', log)
        self.assertIn(" reload result=ok", log)
        self.assertEqual(p.stop(), 0, p.log()[-2000:])


class FdLimit(ProxyCase):
    """Start-up raises the descriptor soft limit to the hard one, and says
    when the listeners' max_connections (two descriptors a session) still
    do not fit, instead of the first EMFILE under load."""

    def start_under(self, nofile, max_connections="1000"):
        ini = self.proxy.ini
        with open(ini) as f:
            text = f.read()
        self.stop_proxy()
        ini2 = ini + ".limited.ini"
        with open(ini2, "w") as f:
            f.write(text.replace("[listener:in]", "[listener:in]\nmax_connections = %s"
                                 % max_connections))
        p = harness.Process(["prlimit", "--nofile=" + nofile, "--", harness.BIN, "-c", ini2],
                            ini2 + ".log")
        self.addCleanup(p.stop)
        self.assertTrue(poll(lambda: " start version=" in p.log(), 20), p.log())
        with open("/proc/%d/limits" % p.pid) as f:
            soft = [l.split()[3] for l in f if l.startswith("Max open files")][0]
        log = p.log()
        self.assertEqual(p.stop(), 0, log)
        return int(soft), log

    def test_soft_limit_raised_to_the_hard_one(self):
        soft, log = self.start_under("256:8192", max_connections="100")
        self.assertEqual(soft, 8192)
        self.assertIn("fd_limit limit=8192 was=256 need=264", log)
        self.assertNotIn("fd_limit WARNING", log)

    def test_warns_when_max_connections_cannot_be_reached(self):
        soft, log = self.start_under("512:512")
        self.assertEqual(soft, 512)
        self.assertIn("fd_limit WARNING: the listeners' max_connections need about 2064 "
                      "descriptors (two per session) and the limit is 512", log)


class UserSignals(ProxyCase):
    """SIGUSR1/SIGUSR2 are logged and ignored: their default action would end
    the proxy (exit 138) without a drain or a log line."""

    def test_usr1_usr2_ignored(self):
        for sig, name in ((signal.SIGUSR1, "USR1"), (signal.SIGUSR2, "USR2")):
            os.kill(self.proxy.pid, sig)
            self.assertTrue(poll(lambda: " signal name=%s result=ignored" % name in self.proxy.log(),
                                 5), self.proxy.log()[-2000:])
        self.assertTrue(self.proxy.proc.running())
        c = self.ready_client()
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()
        proxy, self.proxy = self.proxy, None
        self.assertEqual(proxy.stop(), 0, proxy.log()[-2000:])


@__import__("unittest").skipUnless(os.geteuid() == 0, "runs as root")
class StillRoot(ProxyCase):
    def test_loud_warning(self):
        log = self.proxy.log()
        self.assertIn("still running as root", log)
        self.assertIn("CAP_NET_BIND_SERVICE", log)


class UnknownUser(ProxyCase):
    def test_refuses_to_start(self):
        from harness import Proxy
        with self.assertRaises(RuntimeError) as e:
            Proxy(self.tmp, {"x": {"backend": "127.0.0.1:9"}},
                  proxy_extra={"user": "no-such-user-stp"})
        self.assertIn("unknown user", str(e.exception))


def served_fingerprint(port):
    """SHA-256 of the certificate the proxy presents after STARTTLS (smtplib)."""
    import hashlib
    import smtplib
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.starttls(context=ctx)
        return hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(pem):
    import hashlib
    import ssl
    with open(pem) as f:
        text = f.read()
    end = "-----END CERTIFICATE-----"
    der = ssl.PEM_cert_to_DER_cert(text[:text.index(end) + len(end)])  # the leaf
    return hashlib.sha256(der).hexdigest()


class Reload(ProxyCase):
    proxy_extra = {"workers": "2"}

    def rewrite(self, fn):
        with open(self.proxy.ini) as f:
            text = f.read()
        with open(self.proxy.ini, "w") as f:
            f.write(fn(text))

    def test_certificate_swapped_under_load(self):
        import smtplib
        import ssl
        from harness import CERTS
        old = file_fingerprint(os.path.join(CERTS, "ecdsa.pem"))
        new = file_fingerprint(os.path.join(CERTS, "selfsigned.pem"))
        self.assertEqual(served_fingerprint(self.proxy.port()), old)
        stop, failures, done = threading.Event(), [], [0]

        def load():
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            while not stop.is_set():
                try:
                    with smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10) as s:
                        s.starttls(context=ctx)
                        s.sendmail("a@example.test", ["b@example.test"],
                                   b"Subject: load\r\n\r\nunder reload\r\n")
                    done[0] += 1
                except Exception as e:  # any failure fails the test
                    failures.append(repr(e))
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            self.assertTrue(poll(lambda: done[0] >= 5, 20))
            self.rewrite(lambda t: t.replace("ecdsa.pem", "selfsigned.pem")
                         .replace("ecdsa.key", "selfsigned.key"))
            os.kill(self.proxy.pid, signal.SIGHUP)
            self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10),
                            self.proxy.log()[-2000:])
            before = done[0]
            self.assertTrue(poll(lambda: done[0] >= before + 5, 20))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(failures, [])
        self.assertTrue(poll(lambda: served_fingerprint(self.proxy.port()) == new, 5))
        # Every connection (several, on both workers) now gets the new one.
        for _ in range(6):
            self.assertEqual(served_fingerprint(self.proxy.port()), new)
        self.messages(done[0], timeout=20)

    def test_broken_config_refused_old_keeps_serving(self):
        from harness import CERTS
        old = file_fingerprint(os.path.join(CERTS, "ecdsa.pem"))
        self.rewrite(lambda t: t.replace("ecdsa.pem", "selfsigned.pem")
                     + "no_such_key = 1\nmax_connections = many\n")
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=failed" in self.proxy.log(), 10))
        log = self.proxy.log()
        name = os.path.basename(self.proxy.ini)
        errors = [l for l in log.splitlines() if " reload error=" in l]
        self.assertEqual(len(errors), 2, errors)
        self.assertTrue(all(name + ":" in l for l in errors), errors)
        self.assertIn("no_such_key", errors[0])
        self.assertIn("many", errors[1])
        self.assertTrue(self.proxy.proc.running())
        for _ in range(4):
            self.assertEqual(served_fingerprint(self.proxy.port()), old)
        c = self.ready_client()
        self.assertEqual(self.send_message(c)[0], 250)

    def test_new_limits_apply(self):
        self.rewrite(lambda t: t + "max_connections_per_ip = 1\n")
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10))
        a = self.client()
        self.assertEqual(a.reply()[0], 220)
        b = self.client()
        code, lines = b.reply()
        self.assertEqual(code, 421, lines)

    def test_workers_change_needs_restart(self):
        self.rewrite(lambda t: t.replace("workers = 2", "workers = 3", 1))
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=failed" in self.proxy.log(), 10))
        self.assertIn("need a restart", self.proxy.log())
        c = self.client()
        self.assertEqual(c.reply()[0], 220)

    def test_start_only_keys_need_restart(self):
        # set up once at start: refused with a message, never silently ignored
        import harness
        with open(self.proxy.ini) as f:
            original = f.read()
        for n, line in enumerate(("metrics = 127.0.0.1:%d" % harness.free_port(),
                                  "state_dir = %s" % self.tmp, "log_target = syslog"), 1):
            self.rewrite(lambda t: original.replace("[proxy]\n", "[proxy]\n%s\n" % line, 1))
            os.kill(self.proxy.pid, signal.SIGHUP)
            self.assertTrue(poll(lambda: self.proxy.log().count(" reload result=failed") == n, 10),
                            (line, self.proxy.log()[-1500:]))
        self.assertIn("log_target, metrics and state_dir need a restart", self.proxy.log())
        self.assertNotIn(" reload result=ok", self.proxy.log())
        c = self.client()
        self.assertEqual(c.reply()[0], 220)


def refuses(port):
    """True if nothing accepts on 127.0.0.1:port."""
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


class ReloadListeners(ProxyCase):
    """SIGHUP adding, removing and moving listeners (two workers: every
    worker gets its copy of a new listener and drops its copy of a removed
    one)."""
    proxy_extra = {"workers": "2", "log_level": "debug"}
    listeners = {"in": {}, "gone": {}}

    def rewrite(self, fn):
        with open(self.proxy.ini) as f:
            text = f.read()
        with open(self.proxy.ini, "w") as f:
            f.write(fn(text))

    def reload(self, result="ok"):
        n = self.proxy.log().count(" reload result=")
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: self.proxy.log().count(" reload result=") > n, 10))
        last = [l for l in self.proxy.log().splitlines() if " reload result=" in l][-1]
        self.assertIn(" reload result=%s" % result, last, self.proxy.log()[-3000:])

    def section(self, name, port):
        return "[listener:%s]\nmode = inbound\nlisten = 127.0.0.1:%d\nbackend = 127.0.0.1:%d\n" % (
            name, port, self.sink.port)

    def without(self, name):
        return lambda t: re.sub(r"\[listener:%s\]\n(?:[^\[].*\n)*" % name, "", t)

    def deliver(self, port, subject):
        c = self.client_on(port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(self.send_message(c, body=b"Subject: %s\r\n\r\nx\r\n" % subject)[0],
                         250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()

    def client_on(self, port):
        from harness import Client
        c = Client(port)
        self.addCleanup(c.close)
        return c

    def test_added_listener_serves_in_every_worker(self):
        from harness import free_port
        port = free_port()
        self.rewrite(lambda t: t + self.section("extra", port))
        self.reload()
        self.assertTrue(poll(lambda: " listen listener=extra " in self.proxy.log(), 5))
        self.deliver(port, b"on the new listener")
        for _ in range(16):  # all on one worker: 2^-15
            c = self.client_on(port)
            self.assertEqual(c.reply()[0], 220)
            c.close()
        workers = set(re.findall(r" accept listener=extra worker=(\d+)", self.proxy.log()))
        self.assertEqual(workers, {"0", "1"})
        self.deliver(self.proxy.port("in"), b"on the old listener")
        self.assertEqual(len(self.messages(2)), 2)

    def test_removed_listener_refuses_while_its_session_completes(self):
        port = self.proxy.port("gone")
        c = self.client_on(port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.rewrite(self.without("gone"))
        self.reload()
        self.assertTrue(poll(lambda: refuses(port), 5))
        self.assertIn("listen listener=gone addr=127.0.0.1:%d result=closed" % port,
                      self.proxy.log())
        # the session that was open goes on, unhurried, on the old snapshot
        self.assertTrue(c.silent(0.5), c.buf)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: finished after removal\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertIn(b"finished after removal", self.messages(1)[0])
        self.deliver(self.proxy.port("in"), b"still serving")
        # and the address can come back in a later reload
        self.assertTrue(poll(lambda: self.proxy.log_lines("session"), 5))
        self.rewrite(lambda t: t + self.section("gone", port))
        self.reload()
        self.deliver(port, b"back again")
        self.messages(3)

    def test_changed_address_moves_the_listener(self):
        from harness import free_port
        old, new = self.proxy.port("gone"), free_port()
        self.rewrite(lambda t: t.replace("127.0.0.1:%d" % old, "127.0.0.1:%d" % new))
        self.reload()
        self.assertTrue(poll(lambda: refuses(old), 5))
        self.deliver(new, b"moved")
        self.messages(1)

    def test_taken_port_refuses_the_whole_reload(self):
        from harness import free_port
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        free = free_port()
        # a free new address, a taken one, and a removal: none may happen
        self.rewrite(lambda t: self.without("gone")(t) + self.section("a", free) +
                     self.section("b", taken.getsockname()[1]))
        self.reload("failed")
        log = self.proxy.log()
        self.assertIn("listen listener=b addr=127.0.0.1:%d error=\"Address already in use\""
                      % taken.getsockname()[1], log)
        self.assertTrue(refuses(free), "the free new address was left listening")
        self.assertNotIn("result=closed", log)
        self.deliver(self.proxy.port("in"), b"old in")
        self.deliver(self.proxy.port("gone"), b"old gone")
        self.messages(2)


class Certificates(ProxyCase):
    """Expiry in the log, and certificate files renewed on disk picked up
    without a signal (certbot switches symlinks, acme.sh rewrites in place)."""

    def rewrite(self, fn):
        with open(self.proxy.ini) as f:
            text = f.read()
        with open(self.proxy.ini, "w") as f:
            f.write(fn(text))

    def test_expiry_logged_at_start(self):
        lines = [l for l in self.proxy.log().splitlines() if " certificate file=" in l]
        self.assertEqual(len(lines), 2, lines)  # ECDSA and RSA
        for l in lines:
            self.assertIn(" info ", l)
            self.assertIn("names=mx.example.test,localhost", l)
            self.assertRegex(l, r"not_after=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ days_left=(29|30)\b")

    def test_expiring_in_10_days_warns(self):
        self.rewrite(lambda t: t.replace("ecdsa.pem", "soon.pem").replace("ecdsa.key", "soon.key"))
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10))
        warn = [l for l in self.proxy.log().splitlines()
                if " certificate file=" in l and "soon.pem" in l]
        self.assertEqual(len(warn), 1, warn)
        self.assertIn(" warn ", warn[0])
        self.assertRegex(warn[0], r"days_left=(9|10) expires=soon")

    def install(self, pem, key):
        """Points the config at cert.pem/cert.key in the test dir (copies of
        pem/key) and reloads; returns their paths."""
        import shutil
        from harness import CERTS
        cert, k = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "cert.key")
        shutil.copy(os.path.join(CERTS, pem), cert)
        shutil.copy(os.path.join(CERTS, key), k)
        self.rewrite(lambda t: t.replace(os.path.join(CERTS, "ecdsa.pem"), cert)
                     .replace(os.path.join(CERTS, "ecdsa.key"), k))
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10))
        return cert, k

    def test_rewritten_in_place(self):
        from harness import CERTS
        cert, key = self.install("ecdsa.pem", "ecdsa.key")
        new = file_fingerprint(os.path.join(CERTS, "selfsigned.pem"))
        for src, dst in (("selfsigned.pem", cert), ("selfsigned.key", key)):
            with open(os.path.join(CERTS, src), "rb") as f, open(dst, "r+b") as out:
                out.truncate(0)
                out.write(f.read())
        self.assertTrue(poll(lambda: "trigger=certificate-files" in self.proxy.log(), 15),
                        self.proxy.log()[-2000:])
        self.assertTrue(poll(lambda: served_fingerprint(self.proxy.port()) == new, 5))

    def test_symlink_switched_like_certbot(self):
        from harness import CERTS
        import shutil
        live = os.path.join(self.tmp, "live")
        os.mkdir(live)
        for n in ("ecdsa.pem", "ecdsa.key", "selfsigned.pem", "selfsigned.key"):
            shutil.copy(os.path.join(CERTS, n), os.path.join(live, n))
        cert, key = os.path.join(self.tmp, "fullchain.pem"), os.path.join(self.tmp, "privkey.pem")
        os.symlink(os.path.join(live, "ecdsa.pem"), cert)
        os.symlink(os.path.join(live, "ecdsa.key"), key)
        self.rewrite(lambda t: t.replace(os.path.join(CERTS, "ecdsa.pem"), cert)
                     .replace(os.path.join(CERTS, "ecdsa.key"), key))
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: " reload result=ok" in self.proxy.log(), 10))
        old = file_fingerprint(os.path.join(CERTS, "ecdsa.pem"))
        self.assertEqual(served_fingerprint(self.proxy.port()), old, self.proxy.log())
        for link, target in ((cert, "selfsigned.pem"), (key, "selfsigned.key")):
            os.symlink(os.path.join(live, target), link + ".new")
            os.rename(link + ".new", link)  # atomic switch, as certbot does
        new = file_fingerprint(os.path.join(CERTS, "selfsigned.pem"))
        self.assertTrue(poll(lambda: served_fingerprint(self.proxy.port()) == new, 15),
                        self.proxy.log()[-2000:])

    def test_bad_new_pair_keeps_old(self):
        from harness import CERTS
        cert, key = self.install("ecdsa.pem", "ecdsa.key")
        old = file_fingerprint(os.path.join(CERTS, "ecdsa.pem"))
        with open(os.path.join(CERTS, "selfsigned.pem"), "rb") as f, open(cert, "wb") as out:
            out.write(f.read())  # new certificate, old key: no match
        self.assertTrue(poll(lambda: " reload result=failed" in self.proxy.log(), 15))
        self.assertIn("does not match", self.proxy.log())
        for _ in range(4):
            self.assertEqual(served_fingerprint(self.proxy.port()), old)


class SniTwoNames(ProxyCase):
    """[tls] with mx.example.test (ECDSA + RSA) and other.example.test plus
    *.other.test (ECDSA): the client's server_name picks the certificate."""

    def setUp(self):
        from harness import CERTS
        super().setUp()
        self.proxy.stop()
        with open(self.proxy.ini) as f:
            text = f.read()
        text = text.replace("[listener:", "cert = %s/other.pem\nkey = %s/other.key\n[listener:"
                            % (CERTS, CERTS), 1)
        with open(self.proxy.ini, "w") as f:
            f.write(text)
        from harness import Process, poll as p
        from harness import BIN
        proc = Process([BIN, "-c", self.proxy.ini], self.proxy.ini + ".log2")
        self.proxy.proc, self.proxy.pid = proc, proc.pid
        self.assertTrue(p(lambda: " start version=" in proc.log() or not proc.running()),
                        proc.log())

    def fingerprint(self, sni):
        import hashlib
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = self.client()
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        s = ctx.wrap_socket(c.sock, server_hostname=sni)
        der = s.getpeercert(binary_form=True)
        s.close()
        return hashlib.sha256(der).hexdigest()

    def test_name_picks_certificate(self):
        from harness import CERTS
        mx = file_fingerprint(os.path.join(CERTS, "ecdsa.pem"))
        other = file_fingerprint(os.path.join(CERTS, "other.pem"))
        self.assertEqual(self.fingerprint("mx.example.test"), mx)
        self.assertEqual(self.fingerprint("other.example.test"), other)
        self.assertEqual(self.fingerprint("OTHER.example.test"), other)
        self.assertEqual(self.fingerprint("a.other.test"), other)  # wildcard
        self.assertEqual(self.fingerprint("a.b.other.test"), mx)  # one label only: default
        self.assertEqual(self.fingerprint("unknown.example"), mx)  # default: the first pair
        self.assertEqual(self.fingerprint(None), mx)
        names = [l for l in self.proxy.log().splitlines() if "other.pem" in l]
        self.assertIn("names=other.example.test,*.other.test", names[0])

    def test_verifying_client_for_other_name(self):
        import ssl
        from harness import CERTS
        ctx = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
        c = self.client()
        c.reply()
        c.cmd("EHLO x")
        c.cmd("STARTTLS")
        s = ctx.wrap_socket(c.sock, server_hostname="other.example.test")  # verifies the name
        s.close()

    def test_rsa_only_client_gets_rsa_for_default_name(self):
        import hashlib
        import ssl
        from harness import CERTS
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        c = self.client()
        c.reply()
        c.cmd("EHLO x")
        c.cmd("STARTTLS")
        s = ctx.wrap_socket(c.sock, server_hostname="mx.example.test")
        der = s.getpeercert(binary_form=True)
        s.close()
        self.assertEqual(hashlib.sha256(der).hexdigest(),
                         file_fingerprint(os.path.join(CERTS, "rsa.pem")))


class AddressInUse(ProxyCase):
    def test_second_process_on_same_address_refused(self):
        """SO_REUSEPORT must not let a second proxy share a busy address."""
        from harness import Proxy
        with self.assertRaises(RuntimeError) as e:
            Proxy(self.tmp, {"in": {"backend": "127.0.0.1:9"}},
                  ports={"in": self.proxy.port()})
        self.assertIn("Address already in use", str(e.exception))
        c = self.client()  # the first one still serves
        self.assertEqual(c.reply()[0], 220)


class CrashMixin:
    def crash(self, sig):
        """A session open, then `sig` from outside; the proxy must die of it.
        Returns its log (with the harness's core-file report appended)."""
        c = self.client()
        self.assertEqual(c.reply()[0], 220)
        proxy, self.proxy = self.proxy, None  # stopped here, not by the cleanup
        proxy.expected_exit = -sig  # killed by it (run.py checks every proxy's exit)
        os.kill(proxy.pid, sig)
        self.assertTrue(poll(lambda: not proxy.proc.running(), 10))
        self.assertEqual(proxy.stop(), -sig)
        return proxy.log()


class CrashReport(CrashMixin, ProxyCase):
    """A proxy that crashes leaves, in its log, the stack of every thread
    read from its core file (the harness's diagnostics for a crash that only
    shows up once in many CI runs). Under ASan there is no core (ASan turns
    core files off): the log says so."""
    proxy_extra = {"workers": "2"}

    def test_abort_leaves_stacks_in_the_log(self):
        from harness import ASAN
        log = self.crash(signal.SIGABRT)
        self.assertIn("--- crash (signal %d) ---" % signal.SIGABRT, log)
        if ASAN:
            self.assertIn("no core file", log)
            return
        tail = log[log.index("--- crash"):]
        self.assertIn("--- crashed thread ---", tail)
        self.assertIn("uv_run", tail)         # the main thread and the workers wait in their loops
        self.assertIn("worker_main", tail)
        self.assertRegex(tail, r"\$\d+ = \(mstate\) 0x|\$\d+ = \(struct malloc_state \*\) 0x")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "core")))

    def test_segv_is_reported_with_the_stack(self):
        """The proxy's own report of a fatal signal: one error line with the
        signal, the thread and the frames (the proxy's as offsets that
        addr2line resolves), then the default action (a core)."""
        from harness import ASAN, BIN
        if ASAN:
            return  # not installed in sanitizer builds: ASan reports instead
        log = self.crash(signal.SIGSEGV)
        m = re.search(r"^\S+Z error crash signal=SEGV thread=(main|worker-[01]) "
                      r"frames=(\S+)$", log, re.M)
        self.assertIsNotNone(m, log[-3000:])
        frames = m.group(2).split(",")
        ours = [f for f in frames if f.startswith("smtp-tls-proxy+0x")]
        self.assertTrue(ours, frames)
        # the first of the proxy's frames is the handler itself
        out = subprocess.run(["addr2line", "-f", "-e", BIN, ours[0].split("+")[1]],
                             capture_output=True, text=True).stdout
        self.assertEqual(out.splitlines()[0], "on_fatal", out)
        self.assertIn("--- crash (signal %d) ---" % signal.SIGSEGV, log)  # and the core's stacks


# Run by gdb attached to the proxy: a worker thread's stack pointer moved to
# the lowest byte of its stack, right above the guard page, and the thread
# resumed at the entry of uv_run, whose first push lands on the guard page:
# a stack overflow as a runaway recursion ends, with no trigger in the proxy.
OVERFLOW_GDB = r"""
import gdb

inf = gdb.selected_inferior()
maps = []
with open("/proc/%d/maps" % inf.pid) as f:
    for line in f:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        maps.append((lo, hi, line.split()[1]))


def mapping(addr):
    return next((m for m in maps if m[0] <= addr < m[1]), None)


def is_worker(thread):
    thread.switch()
    f = gdb.newest_frame()
    while f is not None:
        if f.name() == "worker_main":
            return True
        f = f.older()
    return False


worker = next((t for t in inf.threads() if is_worker(t)), None)
if worker is None:
    raise gdb.GdbError("no thread in worker_main")
worker.switch()
lo, hi, perms = mapping(int(gdb.parse_and_eval("$sp")))
guard = mapping(lo - 1)
print("stack %x-%x %s, below it %s" % (lo, hi, perms, guard))
if guard is None or guard[2] != "---p":
    raise gdb.GdbError("no guard page below the worker's stack")
gdb.execute("set $sp = %d" % lo)
gdb.execute("set $pc = %d" % int(gdb.parse_and_eval("(long)&uv_run")))
gdb.execute("detach")
print("OVERFLOW-ARMED")
"""


class StackOverflowReport(ProxyCase):
    """A worker thread that overflows its stack is reported like any
    crash: the handler runs on the thread's alternate signal stack, since
    its own has no room left for a signal frame. gdb does the overflow (see
    OVERFLOW_GDB). Under ASan, which keeps the proxy's handler out, ASan's
    own report must say stack-overflow."""
    proxy_extra = {"workers": "1"}

    def test_worker_stack_overflow_is_reported(self):
        import shutil
        from harness import ASAN
        if shutil.which("gdb") is None:
            self.skipTest("no gdb")
        script = os.path.join(self.tmp, "overflow.py")
        with open(script, "w") as f:
            f.write(OVERFLOW_GDB)
        proxy, self.proxy = self.proxy, None  # stopped here, not by the cleanup
        proxy.expected_exit = None  # it crashes: the exit is checked below
        out = subprocess.run(["gdb", "-batch", "-nx", "-q", "-p", str(proxy.pid), "-x", script],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        self.assertIn(b"OVERFLOW-ARMED", out.stdout, out.stdout.decode("utf-8", "replace")[-3000:])
        self.assertTrue(poll(lambda: not proxy.proc.running(), 20), proxy.log()[-3000:])
        rc = proxy.stop()
        log = proxy.log()
        if ASAN:
            self.assertIn("AddressSanitizer: stack-overflow", log, log[-3000:])
            return
        self.assertEqual(rc, -signal.SIGSEGV, log[-3000:])
        self.assertRegex(log, r"(?m)^\S+Z error crash signal=SEGV thread=worker-0 frames=\S+$")


class CrashReportJson(CrashMixin, ProxyCase):
    proxy_extra = {"log_format": "json"}

    def test_abort_report_is_one_json_line(self):
        from harness import ASAN
        if ASAN:
            return
        log = self.crash(signal.SIGABRT)
        lines = [l for l in log.splitlines() if '"event":"crash"' in l]
        self.assertEqual(len(lines), 1, log[-3000:])
        event = json.loads(lines[0])
        self.assertEqual((event["level"], event["signal"]), ("error", "ABRT"))
        self.assertIn(event["thread"], ("main", "worker-0"))
        self.assertTrue(any(f.startswith("smtp-tls-proxy+0x") for f in event["frames"]), event)
        self.assertRegex(event["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
