"""The container image (deploy/container/): built by deploy/container/build.sh
(debootstrap base, `podman build --isolation chroot`), then checked through
`podman image mount` + chroot, with no container runtime involved: the
image's metadata, what its runtime layer holds, its binary's --version and
--check of the shipped configuration, and a real SMTP session through the
image's binary (as the image's user) to a backend on loopback, with the
image's own HEALTHCHECK command asked while it serves.

The first build takes minutes (debootstrap, apt in both stages, Bazel), a
rebuild with the base and layers cached well under one: set
STP_TEST_CONTAINER=1 to run these tests (test/run.sh leaves them out
otherwise; see test/README.md for the measured times)."""
import functools
import json
import os
import re
import shutil
import subprocess
import unittest

from harness import (CERTS, ROOT, Client, Process, Sink, free_port, parse_trace, poll,
                     split_trace, tmpdir)

IMAGE = os.environ.get("STP_IMAGE", "localhost/smtp-tls-proxy:latest")
BUILD = os.path.join(ROOT, "deploy/container/build.sh")
SHIPPED = "/etc/smtp-tls-proxy/smtp-tls-proxy.ini"
TLS_DIR = "/etc/smtp-tls-proxy/tls"
UID = 10025


@functools.lru_cache(maxsize=None)
def built_image():
    """Builds the image once per run (build.sh reuses the cached base and
    layers); returns build.sh's output."""
    out = subprocess.run(["bash", BUILD], capture_output=True, timeout=3600,
                         env=dict(os.environ, STP_IMAGE=IMAGE))
    if out.returncode != 0:
        text = (out.stdout + out.stderr).decode(errors="replace")
        # the compiler's own words first: the tail alone is Bazel's summary
        errors = [l for l in text.splitlines() if "error:" in l or "ERROR:" in l]
        raise AssertionError("build.sh failed:\n%s\n...\n%s" % ("\n".join(errors[:20]),
                                                                text[-3000:]))
    return out.stdout.decode()


def inspect():
    out = subprocess.run(["podman", "image", "inspect", IMAGE], capture_output=True, check=True,
                         timeout=60)
    (info,) = json.loads(out.stdout)
    return info


class Mounted:
    """An image's filesystem (`podman image mount`, read-only), unmounted at
    exit. Commands run chrooted into it, in a private mount namespace where
    host directories are bind-mounted over some of its directories."""

    def __init__(self, image=IMAGE, binds=None):
        self.image = image
        # {directory in the image: host directory}
        self.binds = dict(binds or {})

    def __enter__(self):
        out = subprocess.run(["podman", "image", "mount", self.image], capture_output=True,
                             check=True, timeout=60)
        self.path = out.stdout.decode().strip()
        return self

    def __exit__(self, *exc):
        subprocess.run(["podman", "image", "unmount", self.image], capture_output=True,
                       timeout=60)

    def argv(self, tls_dir, *argv, user=None):
        """A command line running ARGV chrooted into the image with TLS_DIR
        (None: nothing) over /etc/smtp-tls-proxy/tls and self.binds over
        theirs; every step execs the next, so the child's PID is the
        command's."""
        binds = dict(self.binds)
        if tls_dir:
            binds[TLS_DIR] = tls_dir
        steps = ['mount --rbind "%s" "%s%s"' % (src, self.path, dst) for dst, src in binds.items()]
        steps.append('exec chroot %s "%s" "$@"' % ("--userspec=%s" % user if user else "",
                                                  self.path))
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                " && ".join(steps), "sh"] + list(argv)

    def run(self, tls_dir, *argv, user=None):
        return subprocess.run(self.argv(tls_dir, *argv, user=user), capture_output=True,
                              timeout=60)


POSTFIX_IMAGE = IMAGE.replace("/smtp-tls-proxy:", "/smtp-tls-proxy-legacy-mta:")
POSTFIX_CONTEXT = os.path.join(ROOT, "deploy/compose/postfix")


@functools.lru_cache(maxsize=None)
def built_postfix():
    """The legacy MTA of deploy/compose.yaml, built on build.sh's base."""
    built_image()
    out = subprocess.run(["bash", BUILD, "--base-only"], capture_output=True, timeout=3600)
    if out.returncode != 0:
        raise AssertionError("build.sh --base-only: %s" % out.stderr.decode()[-2000:])
    base = out.stdout.decode().split()[-1]
    out = subprocess.run(["podman", "build", "--isolation", "chroot", "--pull=never",
                          "--build-arg", "BASE=" + base, "-t", POSTFIX_IMAGE, POSTFIX_CONTEXT],
                         capture_output=True, timeout=1800)
    if out.returncode != 0:
        raise AssertionError("postfix image: %s" % (out.stderr + out.stdout).decode()[-4000:])


def enabled():
    return os.environ.get("STP_TEST_CONTAINER") == "1"


if enabled():

    class ContainerImage(unittest.TestCase):
        # the first test may build everything from nothing
        timeout = 3600

        def setUp(self):
            built_image()
            self.tmp = tmpdir()
            self.addCleanup(shutil.rmtree, self.tmp, True)
            # The test certificates, under the names the shipped config uses,
            # readable by the image's user.
            self.tls = os.path.join(self.tmp, "tls")
            os.mkdir(self.tls)
            os.chmod(self.tmp, 0o755)
            for name in ("ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key"):
                shutil.copy(os.path.join(CERTS, name), os.path.join(self.tls, name))
                os.chmod(os.path.join(self.tls, name), 0o644)
            os.chmod(self.tls, 0o755)
            self.image = Mounted().__enter__()
            self.addCleanup(self.image.__exit__)

        def test_metadata(self):
            config = inspect()["Config"]
            self.assertEqual(config["User"], "%d:%d" % (UID, UID))
            self.assertEqual(config["Entrypoint"], ["/usr/local/bin/smtp-tls-proxy"])
            self.assertEqual(config["Cmd"], ["-c", SHIPPED])
            self.assertEqual(sorted(config["ExposedPorts"]), ["2525/tcp", "4650/tcp", "9925/tcp"])
            self.assertEqual(config.get("StopSignal"), "SIGTERM")
            health = inspect()["Healthcheck"]
            self.assertEqual(health["Test"][0], "CMD")
            self.assertIn("/healthz", " ".join(health["Test"]))

        def test_runtime_holds_the_libraries_and_no_build_tools(self):
            out = self.image.run(self.tls, "dpkg-query", "-W", "-f", "${Package}\\n")
            self.assertEqual(out.returncode, 0, out.stderr)
            packages = set(out.stdout.decode().split())
            for needed in ("android-libboringssl", "libuv1", "libinih1", "libc-ares2", "libidn2-0",
                           "ca-certificates"):
                self.assertIn(needed, packages)
            self.assertEqual(sorted(p for p in packages if p.endswith("-dev")), [])
            for absent in ("bazel-bootstrap", "gcc", "g++", "openjdk-17-jdk-headless",
                           "default-jdk-headless", "clang", "python3"):
                self.assertNotIn(absent, packages)
            # every shared library the binary needs resolves inside the image
            out = self.image.run(self.tls, "/lib64/ld-linux-x86-64.so.2", "--list",
                                 "/usr/local/bin/smtp-tls-proxy")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertNotIn(b"not found", out.stdout)
            self.assertIn(b"/android/libssl.so", out.stdout)
            size = inspect()["Size"]
            self.assertLess(size, 200 * 1024 * 1024, "runtime image is %d bytes" % size)
            # the account it runs as, and no root-owned surprise in its state dir
            with open(os.path.join(self.image.path, "etc/passwd")) as f:
                self.assertIn("smtp-tls-proxy:x:%d:%d:" % (UID, UID), f.read())
            st = os.stat(os.path.join(self.image.path, "var/lib/smtp-tls-proxy"))
            self.assertEqual((st.st_uid, st.st_gid), (UID, UID))

        def test_version_and_check_of_the_shipped_config(self):
            out = self.image.run(self.tls, "/usr/local/bin/smtp-tls-proxy", "--version")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertRegex(out.stdout.decode(), r"^smtp-tls-proxy \d+\.\d+\.\d+ .*BoringSSL")
            out = self.image.run(self.tls, "/usr/local/bin/smtp-tls-proxy", "--check", "-c",
                                 SHIPPED, user="%d:%d" % (UID, UID))
            self.assertEqual(out.returncode, 0, (out.stderr + out.stdout).decode())
            # ... and --check is not a rubber stamp: without certificates it fails
            empty = os.path.join(self.tmp, "empty")
            os.mkdir(empty)
            out = self.image.run(empty, "/usr/local/bin/smtp-tls-proxy", "--check", "-c", SHIPPED)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn(SHIPPED.encode() + b":", out.stderr + out.stdout)

        def start_proxy(self, backend_port):
            """The image's binary as the image's user on the shipped
            configuration, moved to free loopback ports and BACKEND_PORT.
            Returns (process, listen ports in file order, {"metrics": port})."""
            with open(os.path.join(self.image.path, SHIPPED.lstrip("/"))) as f:
                shipped = f.read()
            ports = {}

            def relisten(m):
                ports[m.group(1)] = free_port()
                return "%s = 127.0.0.1:%d" % (m.group(1), ports[m.group(1)])
            text = re.sub(r"^(listen|metrics) = (?:0\.0\.0\.0|127\.0\.0\.1):\d+$", relisten,
                          shipped, flags=re.M)
            listens = [int(p) for p in re.findall(r"^listen = 127\.0\.0\.1:(\d+)$", text, re.M)]
            text = re.sub(r"^backend = 127\.0\.0\.1:\d+$", "backend = 127.0.0.1:%d" % backend_port,
                          text, flags=re.M)
            text = text.replace("log_format = json", "log_format = text")
            with open(os.path.join(self.tls, "run.ini"), "w") as f:
                f.write(text)
            proxy = Process(self.image.argv(self.tls, "/usr/local/bin/smtp-tls-proxy", "-c",
                                            TLS_DIR + "/run.ini", user="%d:%d" % (UID, UID)),
                            os.path.join(self.tmp, "proxy.log"))
            self.addCleanup(proxy.stop)
            self.assertTrue(poll(lambda: " start version=" in proxy.log() or not proxy.running()))
            self.assertTrue(proxy.running(), proxy.log())
            return proxy, listens, ports

        def send_through(self, port, subject):
            """One message with STARTTLS through the proxy on PORT."""
            with Client(port) as c:
                code, _ = c.reply()
                self.assertEqual(code, 220)
                code, lines = c.cmd("EHLO client.example")
                self.assertIn("STARTTLS", [l[4:] for l in lines])
                self.assertIn(c.starttls(), ("TLSv1.2", "TLSv1.3"))
                self.assertEqual(c.cmd("EHLO client.example")[0], 250)
                self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<you@example.test>")[0], 250)
                self.assertEqual(c.cmd("DATA")[0], 354)
                code, lines = c.cmd("Subject: %s\r\n\r\nhello\r\n." % subject)
                self.assertEqual(code, 250, lines)
                c.cmd("QUIT")

        def test_serves_smtp_with_starttls_as_its_user(self):
            sink = Sink(self.tmp)
            self.addCleanup(sink.stop)
            proxy, listens, ports = self.start_proxy(sink.port)
            # It is the image's binary, running as the image's user, not root.
            with open("/proc/%d/status" % proxy.pid) as f:
                uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
            self.assertEqual(set(uids), {str(UID)})
            self.assertEqual(os.readlink("/proc/%d/root" % proxy.pid), self.image.path)

            self.send_through(listens[0], "from the image")
            (msg,) = poll(sink.messages)
            header, rest = split_trace(msg)
            trace = parse_trace(header)
            self.assertEqual(trace["proto"], "ESMTPS")
            self.assertIn(trace["version"], ("TLSv1.2", "TLSv1.3"))
            self.assertTrue(rest.endswith(b"hello\r\n"), rest)

            # The image's own HEALTHCHECK command, run inside the image.
            health = inspect()["Healthcheck"]["Test"]
            argv = health[1:]
            metrics = ports["metrics"]
            argv = [a.replace("127.0.0.1/9925", "127.0.0.1/%d" % metrics) for a in argv]
            out = self.image.run(self.tls, *argv, user="%d:%d" % (UID, UID))
            self.assertEqual(out.returncode, 0, out.stderr)
            # and it fails when nothing answers there
            dead = [a.replace("127.0.0.1/%d" % metrics, "127.0.0.1/%d" % free_port()) for a in argv]
            self.assertNotEqual(self.image.run(self.tls, *dead).returncode, 0)

            self.assertEqual(proxy.stop(), 0, proxy.log())
            self.assertRegex(proxy.log(), r"session .*result=ok")

        def test_compose_postfix_receives_through_the_image_proxy(self):
            # deploy/compose.yaml's pair without a container runtime: its
            # Postfix image (built on the same base) run from its own
            # filesystem on a free loopback port, behind the proxy image.
            built_postfix()
            port = free_port()
            state = os.path.join(self.tmp, "postfix")
            os.mkdir(state)
            pf = Mounted(POSTFIX_IMAGE).__enter__()
            self.addCleanup(pf.__exit__)
            # Writable copies of what Postfix writes (queue, mailbox) and of
            # its configuration, moved to this port and out of its chroot.
            binds = {}
            for inside in ("/etc/postfix", "/var/spool/postfix", "/var/lib/postfix", "/home/you"):
                copy = os.path.join(state, inside.strip("/").replace("/", "-"))
                subprocess.run(["cp", "-a", pf.path + inside, copy], check=True, timeout=60)
                binds[inside] = copy
            binds["/dev"] = "/dev"
            pf.binds = binds
            with open(os.path.join(binds["/etc/postfix"], "master.cf")) as f:
                master = f.read()
            master, n = re.subn(r"^smtp\s+inet\s.*$", "127.0.0.1:%d inet n - n - - smtpd" % port,
                                master, count=1, flags=re.M)
            self.assertEqual(n, 1)
            with open(os.path.join(binds["/etc/postfix"], "master.cf"), "w") as f:
                f.write(master)
            # (its log into the writable copy: maillog_file must be under /var)
            out = pf.run(None, "postconf", "-e", "inet_interfaces=127.0.0.1",
                         "maillog_file=/var/spool/postfix/maillog")
            self.assertEqual(out.returncode, 0, out.stderr)
            out = pf.run(None, "postfix", "check")
            self.assertEqual(out.returncode, 0, out.stderr + out.stdout)
            out = pf.run(None, "postconf", "-h", "smtpd_tls_security_level", "smtp_tls_security_level")
            self.assertEqual(out.stdout.decode().split(), ["none", "none"])
            # Its own process group: master's SIGTERM handler signals its group
            # (its children), and stop() signals only that group.
            master_proc = Process(pf.argv(None, "/usr/lib/postfix/sbin/master", "-d"),
                                  os.path.join(self.tmp, "postfix.log"), own_group=True)
            self.addCleanup(master_proc.stop)
            maillog = os.path.join(binds["/var/spool/postfix"], "maillog")

            def log():
                if not os.path.exists(maillog):
                    return master_proc.log()
                with open(maillog, errors="replace") as f:
                    return master_proc.log() + f.read()
            listening = poll(lambda: subprocess.run(["ss", "-Htln", "sport = :%d" % port],
                                                    capture_output=True).stdout.strip(), timeout=20)
            self.assertTrue(listening, log())
            # The legacy MTA itself offers no TLS.
            with Client(port) as c:
                code, lines = c.reply()
                self.assertEqual(code, 220, lines)
                self.assertIn("legacy.example.test", lines[0])
                code, lines = c.cmd("EHLO probe.example")
                self.assertEqual(code, 250)
                self.assertNotIn("STARTTLS", [l[4:] for l in lines])
                c.cmd("QUIT")

            proxy, listens, _ = self.start_proxy(port)
            self.send_through(listens[0], "through compose")
            new = os.path.join(binds["/home/you"], "Maildir", "new")
            self.assertTrue(poll(lambda: os.path.isdir(new) and os.listdir(new), timeout=30), log())
            (name,) = os.listdir(new)
            with open(os.path.join(new, name), "rb") as f:
                msg = f.read()
            # Postfix's own Received: (the client's EHLO name, relayed by the
            # proxy from loopback, in plain ESMTP), then the proxy's, recording
            # the client's TLS; then the message.
            received = re.findall(rb"^Received: .*(?:\n\t.*)*", msg, re.M)
            self.assertEqual(len(received), 2, msg)
            self.assertRegex(received[0], rb"^Received: from client\.example \([^)]*\[127\.0\.0\.1\]\)"
                                          rb"\n\tby legacy\.example\.test \(Postfix\) with ESMTP id ")
            self.assertRegex(received[1], rb"^Received: from client\.example \(\[127\.0\.0\.1\]\)"
                                          rb"\n\tby mx\.example\.test \(smtp-tls-proxy\) with ESMTPS id \S+"
                                          rb"\n\t\(using TLSv1\.[23] with cipher ")
            self.assertTrue(msg.endswith(b"Subject: through compose\n") or
                            re.search(rb"\nSubject: through compose\n(.*\n)*\nhello\n$", msg), msg)
            self.assertEqual(proxy.stop(), 0, proxy.log())
            self.assertNotIn("warning", log())
            # SIGTERM to the group ends master and every Postfix daemon
            # (no SIGKILL needed).
            self.assertNotEqual(master_proc.stop(), -9, log())

            def group_gone():
                try:
                    os.killpg(master_proc.pid, 0)
                except ProcessLookupError:
                    return True
                return False
            self.assertTrue(poll(group_gone, timeout=10))
