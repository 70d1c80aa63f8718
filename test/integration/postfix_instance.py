"""A private Postfix instance for the integration tests.

Everything lives in one temporary directory of its own: the configuration
directory (main.cf and master.cf written here), the queue, the data
directory and the log file (maillog_file, through postlogd). The system's
/etc/postfix is never read for configuration and never written: the queue
directories are made here, not by `postfix check`, and the master runs in
the foreground (`master -c DIR -d`) as the leader of a new session, so
stop() ends it and every daemon it started by its process group, which only
holds our own processes. stop() also removes the directory; use the
instance as a context manager or register stop() with addCleanup, so both
happen on failure too.

  pf = PrivatePostfix(main={"relayhost": "[127.0.0.1]:10025"})
  pf.submit("a@example.test", ["b@example.test"], b"Subject: x\\r\\n\\r\\nbody\\r\\n")
  pf.wait_log(r"status=sent")
"""
import grp
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time

from harness import Process, free_port, poll, wait_port

MASTER = "/usr/lib/postfix/sbin/master"
PATH = "/usr/sbin:/usr/bin:/bin"

# Queue subdirectories: (name, owner group, mode), as Postfix's postfix-files
# has them. The queue directory itself belongs to root.
QUEUE_DIRS = [(d, None, 0o700) for d in ("active", "bounce", "corrupt", "defer", "deferred",
                                         "flush", "hold", "incoming", "private", "saved",
                                         "trace")] + [("maildrop", "postdrop", 0o730),
                                                      ("public", "postdrop", 0o710)]

# Services without chroot (a chroot would need copies of system files in the
# queue directory). The SMTP listener's line is added with its port.
SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available():
    """None when Postfix is installed, else what is missing."""
    for f in (MASTER, "/usr/sbin/postqueue", "/usr/sbin/sendmail"):
        if not os.access(f, os.X_OK):
            return "%s is missing (deploy/install-deps.sh installs postfix)" % f
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or postdrop group is missing"
    if os.geteuid() != 0:
        return "a private Postfix master must start as root"
    return None


def maildir_order(name):
    """Sort key of a maildir file name, "SECONDS.VdevIinodeMmicroseconds.host"
    as Postfix writes it: delivery time. By name alone, two deliveries in the
    same second would sort by device and inode number, in no useful order."""
    m = re.match(r"(\d+)\.[^.]*M(\d+)\.", name)
    return (int(m.group(1)), int(m.group(2)), name) if m else (float("inf"), 0, name)


class PrivatePostfix:
    """One private instance. `main` adds or overrides main.cf settings; the
    instance's smtpd listens on 127.0.0.1:self.port. With `mailbox=True`
    mail for example.test is delivered by virtual(8) into the Maildir
    self.maildir (read it with messages())."""

    def __init__(self, main=None, mailbox=False, hostname="legacy.example.test"):
        self.dir = tempfile.mkdtemp(prefix="stp-postfix-")
        self.proc = None
        try:
            self._setup(main or {}, mailbox, hostname)
            self._start()
        except BaseException:
            self.stop()
            raise

    def _setup(self, main, mailbox, hostname):
        pf = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        # Postfix daemons drop to the postfix user and must reach the
        # directories below by absolute path.
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        data = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        self.maildir = os.path.join(self.dir, "mail", "box")
        for d in (self.conf, self.queue):
            os.makedirs(d, 0o755)
        os.makedirs(data, 0o700)
        os.chown(data, pf.pw_uid, pf.pw_gid)
        for name, group, mode in QUEUE_DIRS:
            p = os.path.join(self.queue, name)
            os.mkdir(p)
            os.chown(p, pf.pw_uid, postdrop if group else 0)
            os.chmod(p, mode)
        os.mkdir(os.path.join(self.queue, "pid"), 0o755)
        self.port = free_port()
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": hostname,
            "mydomain": hostname.split(".", 1)[1],
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            # Retries are triggered by the tests (flush()), never by a timer.
            "queue_run_delay": "3600s",
            "minimal_backoff_time": "3600s",
            "maximal_backoff_time": "3600s",
        }
        if mailbox:
            box = os.path.join(self.dir, "mail")
            os.mkdir(box, 0o700)
            os.chown(box, pf.pw_uid, pf.pw_gid)
            settings.update({
                "virtual_mailbox_domains": "example.test",
                "virtual_mailbox_base": box,
                "virtual_mailbox_maps": "static:box/",
                "virtual_uid_maps": "static:%d" % pf.pw_uid,
                "virtual_gid_maps": "static:%d" % pf.pw_gid,
            })
        settings.update(main)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write("127.0.0.1:%d inet n - n - - smtpd\n" % self.port)
            f.write(SERVICES)

    def _start(self):
        self.proc = Process([MASTER, "-c", self.conf, "-d"], os.path.join(self.dir, "master.err"),
                            stdout=subprocess.DEVNULL, own_group=True,
                            env={"PATH": PATH, "MAIL_CONFIG": self.conf})
        try:
            wait_port(self.port)
        except RuntimeError:
            raise RuntimeError("postfix master did not start:\n%s\n%s" % (self.proc.log(),
                                                                           self.log()))

    def run(self, argv, **kw):
        """A Postfix command line tool against this instance's configuration."""
        return subprocess.run(argv, capture_output=True, timeout=30,
                              env={"PATH": PATH, "MAIL_CONFIG": self.conf}, **kw)

    def log(self):
        try:
            with open(self.maillog, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=20):
        """The first maillog match of the regular expression (or None)."""
        return poll(lambda: re.search(pattern, self.log()), timeout, interval=0.1)

    def submit(self, sender, rcpts, message):
        """Injects a message through the instance's own smtpd."""
        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example.test",
                         timeout=20)
        try:
            s.sendmail(sender, rcpts, message)
        finally:
            s.quit()

    def sendmail(self, sender, rcpts, message):
        """Injects a message with sendmail -C (postdrop, maildrop, pickup)."""
        r = self.run(["sendmail", "-C", self.conf, "-f", sender, "--"] + list(rcpts),
                     input=message)
        if r.returncode != 0:
            raise RuntimeError("sendmail failed: %r" % r.stderr)

    def queue_p(self):
        """`postqueue -c DIR -p` as text."""
        return self.run(["postqueue", "-c", self.conf, "-p"]).stdout.decode("utf-8", "replace")

    def queue_j(self):
        """`postqueue -c DIR -j`: one dict per queued message."""
        out = self.run(["postqueue", "-c", self.conf, "-j"]).stdout.decode("utf-8", "replace")
        return [json.loads(l) for l in out.splitlines() if l.strip()]

    def flush(self):
        """`postqueue -f`: retry deferred mail now."""
        r = self.run(["postqueue", "-c", self.conf, "-f"])
        if r.returncode != 0:
            raise RuntimeError("postqueue -f failed: %r" % r.stderr)

    def messages(self):
        """Delivered messages (mailbox=True), oldest first, as bytes."""
        new = os.path.join(self.maildir, "new")
        if not os.path.isdir(new):
            return []
        out = []
        for n in sorted(os.listdir(new), key=maildir_order):
            with open(os.path.join(new, n), "rb") as f:
                out.append(f.read())
        return out

    def _group_alive(self, pgid):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self):
        """Stops the master and its daemons (SIGTERM to our process group,
        SIGKILL for anything left), then removes the directory. Idempotent."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            pgid = proc.pid
            proc.stop()
            deadline = time.time() + 10
            while self._group_alive(pgid) and time.time() < deadline:
                time.sleep(0.05)
            if self._group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        if self.dir:
            shutil.rmtree(self.dir, True)
            self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
