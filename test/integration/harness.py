"""Integration test harness: real processes on loopback, stopped by PID.

Everything a test starts (the proxy, a backend, a client tool) is a child of
the test process, is stopped by its PID (or, for a script we started in its
own session, its process group) and is stopped on failure too: use the
context managers or TestCase.addCleanup, never pkill.

Environment:
  STP_BIN    proxy binary (default bazel-bin/proxy/smtp-tls-proxy), so the same
             tests run against the ASan+UBSan build
  STP_CERTS  directory made by test/certs/gen.sh (run.py makes one if unset)
  STP_ASAN   set when STP_BIN is a sanitizer build (looser memory bounds)
"""
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("STP_BIN", os.path.join(ROOT, "bazel-bin/proxy/smtp-tls-proxy")))
CERTS = os.environ.get("STP_CERTS", "")
SINK = os.path.join(ROOT, "test/peers/sink.py")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ASAN = bool(os.environ.get("STP_ASAN"))
NEXTHOP = os.path.join(ROOT, "test/peers/nexthop.py")
# test/fault/ssl_write_fault.c: see fault_env()
FAULT_LIB = os.path.abspath(os.environ.get(
    "STP_FAULT_LIB", os.path.join(ROOT, "bazel-bin/test/fault/libssl_write_fault.so")))
# Set to ["ip", "netns", "exec", NAME] to start processes inside a network
# namespace (`ip netns exec` execs the command, so the PID stays the child's).
PREFIX = []

# --- crashes -----------------------------------------------------------------


def allow_core_dump():
    """In the child before exec: core files on (the proxy runs in its test's
    directory, so a crash leaves its core there; see crash_report)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def child_limits(core, nofile):
    """The preexec_fn for a child: allow_core_dump() if core, and with
    nofile both descriptor limits set to it (the proxy raises its soft limit
    to the hard one at start, so a test lowers both)."""
    if not core and nofile is None:
        return None

    def preexec():
        import resource
        if core:
            allow_core_dump()
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    return preexec


CRASH_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)


def crash_report(binary, directory, pid):
    """What a crashed process left: every thread's stack and the state of
    glibc's allocator for the thread that crashed (with libc6-dbg installed),
    from the core file in `directory`; the core is removed afterwards."""
    core = next((os.path.join(directory, n) for n in ("core.%d" % pid, "core")
                 if os.path.exists(os.path.join(directory, n))), None)
    if core is None:
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
        return "no core file in %s (kernel.core_pattern = %s)" % (directory, pattern)
    if shutil.which("gdb") is None:
        return "core file %s kept; no gdb to read it" % core
    # The crashed thread's stack and glibc's arena state come last: a test
    # shows the tail of the log.
    cmds = ["thread apply all bt 12", "echo \\n--- crashed thread ---\\n", "bt 30",
            "p thread_arena", "p thread_arena->attached_threads", "p thread_arena->system_mem",
            "p tcache", "p &main_arena", "p main_arena.attached_threads", "p free_list",
            "p narenas"]
    try:
        out = subprocess.run(["gdb", "-batch", "-nx", "-q"] + [a for c in cmds for a in ("-ex", c)]
                             + [binary, core], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=120).stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        out = "gdb timed out"
    out = "\n".join(l for l in out.splitlines()
                    if not l.startswith(("[New LWP", "warning:", "[Thread debugging",
                                         "Using host libthread_db")))
    os.unlink(core)
    return out


def fault_env(ssl_write="", socket_flag=""):
    """The environment for a proxy whose SSL_write toward a next hop fails
    when what it writes holds the text `ssl_write`, and whose new TCP
    sockets fail with EMFILE while the file `socket_flag` exists (test/fault's
    LD_PRELOAD shim): the proxy's own failures, which no peer can cause."""
    if not os.path.exists(FAULT_LIB):
        raise RuntimeError("no %s (bazel build //test/fault:all, or set STP_FAULT_LIB)"
                           % FAULT_LIB)
    env = dict(os.environ, LD_PRELOAD=FAULT_LIB, STP_FAULT_SSL_WRITE=ssl_write,
               STP_FAULT_SOCKET=socket_flag)
    if ASAN:  # the shim comes before ASan's runtime in the list of libraries
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    return env


# --- waiting -----------------------------------------------------------------


_handed_out = set()


def free_port():
    """A loopback TCP port nobody listens on right now, and never the same
    one twice in this run (the kernel may offer a just-closed port again,
    which would give two listeners of one test the same address)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            break
    return port


def wait_port(port, timeout=10, host="127.0.0.1"):
    """Waits until something accepts on host:port. (Opens a connection: do not
    use it on the proxy, where that would be a session of its own.)"""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not listening after %ss" % (port, timeout))


def poll(fn, timeout=10, interval=0.05):
    """Calls fn until it returns something true or timeout passes; returns
    its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    return fn()


def tmpdir():
    return tempfile.mkdtemp(prefix="stp-it-")


# --- processes ----------------------------------------------------------------


class Process:
    """A child process we own. stop() ends it by PID only (SIGTERM, then
    SIGKILL after a timeout); with own_group=True the child leads a new
    session and the signal goes to that group, which only holds our children.
    Usable as a context manager."""

    def __init__(self, argv, stderr_path, env=None, stdout=subprocess.PIPE, own_group=False,
                 cwd=None, core=False, nofile=None):
        self.argv = argv
        self.stderr_path = stderr_path
        self.own_group = own_group
        self.errf = open(stderr_path, "wb")
        self.p = subprocess.Popen(PREFIX + argv, stdout=stdout, stderr=self.errf, stdin=subprocess.DEVNULL,
                                  env=env, cwd=cwd, start_new_session=own_group,
                                  preexec_fn=child_limits(core, nofile))
        self.pid = self.p.pid

    def _signal(self, sig):
        if self.own_group:
            os.killpg(self.pid, sig)
        else:
            self.p.send_signal(sig)

    def running(self):
        return self.p.poll() is None

    def wait_ready(self, what, timeout=20):
        """For a peer that prints "ready" on stdout once it listens: waits for
        that line (at most `timeout` s); otherwise stops the peer and raises,
        so a peer that failed to start is never left running."""
        line = b""
        if select.select([self.p.stdout], [], [], timeout)[0]:
            line = self.p.stdout.readline()
        if b"ready" not in line:
            self.stop()
            raise RuntimeError("%s did not start: %s" % (what, self.log()))

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Returns the exit code (negative: killed by a signal)."""
        if self.p.poll() is None:
            try:
                self._signal(sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.p.wait()
            except ProcessLookupError:
                self.p.wait()
        if self.p.stdout:
            self.p.stdout.close()
        if not self.errf.closed:
            self.errf.close()
        return self.p.returncode

    def log(self):
        if not self.errf.closed:
            self.errf.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Sink:
    """test/peers/sink.py on a free port; args are sink options."""

    def __init__(self, tmp, *args):
        self.port = free_port()
        self.maildir = os.path.join(tmp, "mail-%d" % self.port)
        self.transcript = os.path.join(tmp, "transcript-%d" % self.port)
        open(self.transcript, "wb").close()
        self.proc = Process([PY, SINK, "--listen", "127.0.0.1:%d" % self.port, "--maildir",
                             self.maildir, "--transcript", self.transcript] + list(args),
                            os.path.join(tmp, "sink-%d.log" % self.port))
        self.proc.wait_ready("sink")

    def messages(self):
        """The stored messages, oldest first, as bytes."""
        if not os.path.isdir(self.maildir):
            return []
        out = []
        for n in sorted(os.listdir(self.maildir)):
            if n.endswith(".eml"):
                with open(os.path.join(self.maildir, n), "rb") as f:
                    out.append(f.read())
        return out

    def lines(self):
        """Every command line the backend received (and its "(...)" markers)."""
        with open(self.transcript, "rb") as f:
            return f.read().splitlines()

    def stop(self):
        return self.proc.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# Every Proxy started during the current test (run.py checks and clears it).
STARTED = []


class Proxy:
    """Writes an INI into tmp and runs the proxy in the foreground.

    listeners maps a listener name to its keys; mode and listen are filled in
    (listen on a free loopback port, see port(name); a `listen` key, e.g.
    "[::1]:PORT" with that port in `ports`, replaces it). tls=False leaves out the
    [tls] section (no certificate: STARTTLS must not be offered); a directory
    in its place is where ecdsa.pem/.key and rsa.pem/.key are taken from.
    nofile: the proxy's descriptor limit (soft and hard)."""

    def __init__(self, tmp, listeners, tls=True, proxy_extra=None, tls_extra=None, env=None,
                 ports=None, extra_text="", nofile=None):
        self.tmp = tmp
        self.ports = {}
        self.crash_reported = False
        proxy_extra = dict(proxy_extra or {})
        lines = ["[proxy]", "hostname = mx.example.test",
                 "log_level = %s" % proxy_extra.pop("log_level", "info")]
        lines += ["%s = %s" % kv for kv in proxy_extra.items()]
        if tls:
            d = CERTS if tls is True else tls
            lines += ["[tls]", "cert = %s/ecdsa.pem" % d, "key = %s/ecdsa.key" % d,
                      "cert = %s/rsa.pem" % d, "key = %s/rsa.key" % d]
            lines += ["%s = %s" % kv for kv in (tls_extra or {}).items()]
        for name, keys in listeners.items():
            port = (ports or {}).get(name) or free_port()
            self.ports[name] = port
            keys = dict(keys)
            lines.append("[listener:%s]" % name)
            lines.append("mode = %s" % keys.pop("mode", "inbound"))
            lines.append("listen = %s" % keys.pop("listen", "127.0.0.1:%d" % port))
            lines += ["%s = %s" % kv for kv in keys.items()]
        fd, self.ini = tempfile.mkstemp(prefix="proxy-", suffix=".ini", dir=tmp)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n" + extra_text)
        self.proc = Process([BIN, "-c", self.ini], self.ini + ".log", env=env, cwd=tmp, core=True,
                            nofile=nofile)
        self.pid = self.proc.pid
        # Ready once it logged its start; probing the ports would open sessions.
        started = (" start version=", '"event":"start"')  # text or JSON log
        if not poll(lambda: any(m in self.proc.log() for m in started) or not self.proc.running()):
            self.proc.stop(signal.SIGKILL)
            raise RuntimeError("proxy did not start:\n" + self.proc.log())
        if not self.proc.running():
            raise RuntimeError("proxy exited:\n" + self.proc.log())
        # run.py stops it after the test if the test did not, and fails the
        # test unless it exited as expected (0: a clean drain; under ASan a
        # leak or a sanitizer report is not 0). A test that means it to end
        # otherwise sets expected_exit (None: whatever it is).
        self.expected_exit = 0
        STARTED.append(self)

    def port(self, name="in"):
        return self.ports[name]

    def stop(self):
        """SIGTERM; returns the exit code (non-zero under ASan when leaking).
        A crash appends what its core file tells to the log, so a test that
        shows the log's tail shows where it crashed."""
        rc = self.proc.stop()
        if rc is not None and -rc in CRASH_SIGNALS and not self.crash_reported:
            self.crash_reported = True
            report = crash_report(BIN, self.tmp, self.pid)
            with open(self.proc.stderr_path, "ab") as f:
                f.write(("\n--- crash (signal %d) ---\n%s" % (-rc, report)).encode())
        return rc

    def log(self):
        return self.proc.log()

    def log_lines(self, kind):
        """Log lines of one event: "session", "message", "start", ... (the
        field after the time and the level; a kind of several words, such
        as "accept endpoint=metrics", also wants the rest right after it).
        A line that merely quotes " message " in a reply is not one."""
        out = []
        for l in self.log().splitlines():
            f = l.split(" ", 2)
            if len(f) == 3 and (f[2] == kind or f[2].startswith(kind + " ")):
                out.append(l)
        return out

    def cpu_seconds(self):
        """utime + stime of every thread so far, from /proc/PID/stat."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self):
        """How many descriptors the proxy has open now."""
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def hwm_kb(self):
        """Peak resident set size (VmHWM) in kB."""
        with open("/proc/%d/status" % self.pid) as f:
            return int([l for l in f if l.startswith("VmHWM")][0].split()[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Syscalls:
    """strace attached to a running process and all its threads, recording
    the write calls it makes meanwhile. For tests about how bytes are grouped
    into system calls, which no peer can see: loopback TCP may merge or split
    segments as it likes."""

    CALLS = "trace=write,writev,sendmsg,sendto"

    def __init__(self, tmp, pid, calls=CALLS):
        self.out = os.path.join(tmp, "strace-%d.txt" % pid)
        # -xx: every byte as \xNN, so stop() can decode any of them
        self.proc = Process(["strace", "-f", "-p", str(pid), "-e", calls, "-xx", "-s", "65536",
                             "-o", self.out], self.out + ".err", stdout=subprocess.DEVNULL)
        # "Process N attached with T threads", once all of them are
        if not poll(lambda: " attached" in self.proc.log() or not self.proc.running()):
            self.proc.stop(signal.SIGKILL)
            raise RuntimeError("strace did not attach: " + self.proc.log())

    def lines(self):
        """Detaches; returns strace's line for each call, in order."""
        self.proc.stop(signal.SIGINT)
        with open(self.out, errors="replace") as f:
            return [l for l in f.read().splitlines() if "(" in l]

    def stop(self):
        """Detaches; returns the bytes of each write call, in order."""
        calls = self.lines()
        # a call's string arguments (a writev's buffers) joined
        return [bytes.fromhex("".join(re.findall(r'"((?:\\x[0-9a-f]{2})*)"', l)).replace("\\x", ""))
                for l in calls]


class NextHop:
    """A scripted receiving MTA (test/peers/nexthop.py) with a certificate and a mode."""

    def __init__(self, tmp, mode="good", cert="ecdsa", port=None, host="127.0.0.1"):
        self.port = port or free_port()
        self.maildir = os.path.join(tmp, "nexthop-%d" % self.port)
        self.proc = Process([PY, NEXTHOP, "--listen",
                             ("[%s]:%d" if ":" in host else "%s:%d") % (host, self.port),
                             "--maildir", self.maildir, "--cert", os.path.join(CERTS, cert + ".pem"), "--key",
                             os.path.join(CERTS, cert + ".key"), "--mode", mode],
                            os.path.join(tmp, "nexthop-%d.log" % self.port))
        self.proc.wait_ready("nexthop")

    def stored(self):
        return sorted(os.listdir(self.maildir)) if os.path.isdir(self.maildir) else []

    def stop(self):
        self.proc.stop()


# --- clients -------------------------------------------------------------------


def client_ctx(version=None):
    """A verifying client context trusting the test CA; version "1.2" or
    "1.3" pins the protocol."""
    ctx = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Client:
    """A raw SMTP client: send exact bytes, read multi-line replies with a
    timeout, switch to TLS after a 220 to STARTTLS."""

    def __init__(self, port, timeout=10, implicit=False, version=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if implicit:
            self.sock = client_ctx(version).wrap_socket(self.sock,
                                                        server_hostname="mx.example.test")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self):
        """Returns (code, [lines]) of the next complete (multi-line) reply."""
        lines = []
        while True:
            line = self._line()
            lines.append(line.decode("utf-8", "replace"))
            if not re.match(rb"^[2-5][0-9][0-9]([ -]|$)", line):
                raise AssertionError("not an SMTP reply line: %r" % line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def tls(self, version=None, sni="mx.example.test"):
        """Handshakes on the current socket (after a 220 to STARTTLS)."""
        self.sock = client_ctx(version).wrap_socket(self.sock, server_hostname=sni)
        return self.sock.version()

    def starttls(self, version=None, sni="mx.example.test"):
        """STARTTLS, asserting "220 2.0.0" and that nothing follows it in
        plaintext, then the handshake. Returns the TLS version."""
        code, lines = self.cmd("STARTTLS")
        assert code == 220 and lines[0].startswith("220 2.0.0"), lines
        assert self.buf == b"", "bytes after 220: %r" % self.buf
        return self.tls(version, sni)

    def silent(self, seconds=1.0):
        """True if the server sends nothing for `seconds` (and keeps the
        connection open)."""
        self.sock.settimeout(seconds)
        try:
            d = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        finally:
            self.sock.settimeout(10)
        self.buf += d
        return False

    def closed(self, timeout=5):
        """True if the server closes the connection (reading EOF) within
        timeout; anything read meanwhile is kept in buf."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (socket.timeout, TimeoutError):
            return False
        except (OSError, ssl.SSLError):
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StreamingClient:
    """A client that keeps writing while it reads, in one thread (select):
    the legacy MTA in the middle of a big message when the server ends the
    session. Plaintext, or TLS after STARTTLS through memory BIOs, so that
    the TCP stream under TLS stays in view: stream() tells whether it ended
    with a FIN (recv returns b'') or a reset, and whether a write failed."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.tls = None  # (SSLObject, incoming BIO, outgoing BIO)
        self.buf = b""

    def _flush_tls(self):
        out = self.tls[2].read()
        if out:
            self.sock.sendall(out)

    def send(self, data):
        if self.tls:
            self.tls[0].write(data)
            self._flush_tls()
        else:
            self.sock.sendall(data)

    def _recv(self):
        if not self.tls:
            return self.sock.recv(65536)
        while True:
            try:
                return self.tls[0].read(65536)
            except ssl.SSLWantReadError:
                d = self.sock.recv(65536)
                if not d:
                    return b""
                self.tls[1].write(d)
            except ssl.SSLZeroReturnError:
                return b""

    def reply(self):
        """(code, [lines]) of the next reply, as Client.reply."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                d = self._recv()
                if not d:
                    raise EOFError("connection closed; pending %r" % self.buf)
                self.buf += d
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            lines.append(line.decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self):
        code, lines = self.cmd("STARTTLS")
        assert code == 220, lines
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx().wrap_bio(inc, out, server_hostname="mx.example.test")
        self.tls = (obj, inc, out)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
                d = self.sock.recv(65536)
                if not d:
                    raise EOFError("closed during the handshake")
                inc.write(d)
        self._flush_tls()

    def stream(self, chunk, total, seconds=30):
        """Writes `chunk` again and again, `total` bytes in all, as fast as
        the socket takes them and whatever comes back meanwhile (a client
        sending its message does not stop for a reply), and reads until the
        server's end of the stream. Returns a dict: got (the bytes read:
        plaintext, or the TLS records decrypted), end ("eof": a FIN,
        "reset", or "timeout" after `seconds`), close_notify (TLS: it came
        before the end), write_error (the first failed write, or None;
        writing stops there), written (bytes)."""
        r = {"got": self.buf, "end": "timeout", "close_notify": False, "write_error": None,
             "written": 0}
        self.buf = b""
        pending = b""
        writing = True
        self.sock.setblocking(False)
        deadline = time.time() + seconds
        try:
            while time.time() < deadline and (writing or r["end"] == "timeout"):
                rd, wr, _ = select.select([self.sock] if r["end"] == "timeout" else [],
                                          [self.sock] if writing else [], [], 0.2)
                if rd:
                    try:
                        d = self.sock.recv(65536)
                    except ConnectionResetError:
                        r["end"] = "reset"
                        continue
                    if not d:
                        r["end"] = "eof"
                        continue
                    if self.tls:
                        self.tls[1].write(d)
                        try:
                            while not r["close_notify"]:
                                d = self.tls[0].read(65536)
                                if not d:
                                    r["close_notify"] = True  # ragged EOFs are not suppressed
                                r["got"] += d
                        except ssl.SSLWantReadError:
                            pass
                        except ssl.SSLZeroReturnError:
                            r["close_notify"] = True
                    else:
                        r["got"] += d
                if wr and writing:
                    if not pending:
                        if r["written"] >= total:
                            writing = False
                            continue
                        if self.tls:
                            try:
                                self.tls[0].write(chunk)
                            except ssl.SSLError as e:
                                r["write_error"] = repr(e)  # TLS closed under it
                                writing = False
                                continue
                            pending = self.tls[2].read()
                        else:
                            pending = chunk
                    try:
                        n = self.sock.send(pending)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        r["write_error"] = repr(e)
                        writing = False
                        continue
                    pending = pending[n:]
                    r["written"] += n
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(self.timeout)
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- messages --------------------------------------------------------------------


def split_trace(msg):
    """Returns (the first header, unfolded to one line, and the rest of the
    message) of a stored message; asserts the first header is Received:."""
    assert msg.startswith(b"Received: "), msg[:200]
    i = msg.find(b"\r\n")
    while msg[i + 2:i + 3] in (b"\t", b" "):
        i = msg.find(b"\r\n", i + 2)
    return msg[:i].decode().replace("\r\n", ""), msg[i + 2:]


# "Received: from HELO ([IP]) by HOSTNAME (smtp-tls-proxy) with PROTO id ID
#  (using TLSvX with cipher NAME (N/N bits)); DATE", folded with tabs.
TRACE_RE = re.compile(
    r"^Received: from (?P<helo>\S+) \(\[(?P<ip>[0-9a-fA-F.:]+)\]\)\s+by (?P<host>\S+) "
    r"\(smtp-tls-proxy\) with (?P<proto>E?SMTPS?A?) id (?P<id>\S+)"
    r"(?:\s+\(using (?P<version>TLSv1\.[23]) with cipher (?P<cipher>[A-Z0-9_-]+) "
    r"\((?P<bits>\d+)/(?P<abits>\d+) bits\)\))?;\s+(?P<date>\w{3}, \d{1,2} \w{3} \d{4} "
    r"\d\d:\d\d:\d\d [+-]\d{4})$")


def parse_trace(header):
    """The fields of our Received: header (see TRACE_RE); asserts the shape."""
    m = TRACE_RE.match(header)
    assert m, "Received: header not in the expected shape: %r" % header
    return m.groupdict()


def log_fields(line):
    """key=value fields of a log line (values may be "quoted")."""
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)}


# --- the common test case ------------------------------------------------------------

BODY = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\n"
        b"line one\r\n..a line that starts with a dot\r\nlast line\r\n")
BODY_UNSTUFFED = BODY.replace(b"\r\n..a", b"\r\n.a")


class ProxyCase(unittest.TestCase):
    """A proxy (with listeners `listeners`, each pointed at a fresh sink
    started with `sink_args`) per test. Its exit code at SIGTERM must be 0,
    so under ASan a leak or an unclean shutdown fails the test."""

    sink_args = ()
    listeners = {"in": {}}
    tls = True
    proxy_extra = None
    nofile = None  # the proxy's descriptor limit
    env = None  # the proxy's environment (fault_env()), or os.environ

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp, *self.sink_args)
        self.addCleanup(self.sink.stop)
        ls = {}
        for name, keys in self.listeners.items():
            k = {"backend": "127.0.0.1:%d" % self.sink.port}
            k.update(keys)
            ls[name] = k
        self.proxy = Proxy(self.tmp, ls, tls=self.tls, proxy_extra=self.proxy_extra,
                           nofile=self.nofile, env=self.env)
        self.addCleanup(self.stop_proxy)

    def stop_proxy(self):
        if self.proxy is not None:
            proxy, self.proxy = self.proxy, None
            rc = proxy.stop()
            self.assertEqual(rc, 0, "proxy exit code %s at SIGTERM\n%s" % (rc, proxy.log()[-6000:]))

    def client(self, name="in", **kw):
        c = Client(self.proxy.port(name), **kw)
        self.addCleanup(c.close)
        return c

    def ready_client(self, name="in", tls=True, helo="client.example", **kw):
        """A client past the greeting and EHLO (and STARTTLS + EHLO again)."""
        c = self.client(name, **kw)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO " + helo)[0], 250)
        if tls:
            c.starttls()
            self.assertEqual(c.cmd("EHLO " + helo)[0], 250)
        return c

    def send_message(self, c, body=BODY, rcpts=("b@example.test",), sender="a@example.test"):
        """MAIL, RCPTs, DATA, body (already dot-stuffed, CRLF-ended) and the
        final dot; returns the reply to the end of data."""
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % sender)[0], 250)
        for r in rcpts:
            self.assertEqual(c.cmd("RCPT TO:<%s>" % r)[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body + b".\r\n")
        return c.reply()

    def messages(self, n=1, timeout=10):
        """Waits for exactly n stored messages and returns them."""
        msgs = poll(lambda: len(self.sink.messages()) >= n and self.sink.messages(), timeout)
        msgs = msgs or self.sink.messages()
        self.assertEqual(len(msgs), n, [m[:300] for m in msgs])
        return msgs

    def one_message(self):
        """(unfolded Received: header, rest) of the single stored message."""
        return split_trace(self.messages(1)[0])

    def assert_trace(self, header, proto, version=None, helo=None):
        t = parse_trace(header)
        self.assertEqual(t["proto"], proto, header)
        self.assertEqual(t["host"], "mx.example.test", header)
        self.assertEqual(t["ip"], "127.0.0.1", header)
        if helo:
            self.assertEqual(t["helo"], helo, header)
        if version:
            self.assertEqual(t["version"], version, header)
            self.assertTrue(t["cipher"], header)
        else:
            self.assertIsNone(t["version"], header)
        return t

    def assert_never_sent(self, *needles):
        """No transcript line of the backend contains any of needles."""
        for line in self.sink.lines():
            for n in needles:
                self.assertNotIn(n.upper(), line.upper(), "backend saw %r" % line)
