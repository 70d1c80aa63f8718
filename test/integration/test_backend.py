"""The backend: its replies relayed exactly, its failures turned into 4xx
(never a 2xx, so the sender keeps the message), and logged.
"""
import re
import shutil
import socket
import threading
import time
import unittest

from harness import (ASAN, BODY, BODY_UNSTUFFED, Client, Proxy, ProxyCase, StreamingClient, Syscalls,
                     free_port, log_fields, poll, split_trace, tmpdir)


class RejectsOneRcpt(ProxyCase):
    sink_args = ("--reject-rcpt", "nobody")

    def test_rcpt_rejection_relayed_exactly(self):
        c = self.ready_client()
        c.cmd("MAIL FROM:<a@example.test>")
        self.assertEqual(c.cmd("RCPT TO:<nobody@example.test>"),
                         (550, ["550 5.1.1 <rejected>: Recipient address rejected"]))
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>"), (250, ["250 2.1.5 Ok"]))
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(split_trace(self.messages(1)[0])[1],
                         BODY.replace(b"\r\n..a", b"\r\n.a"))

    def test_pipelined_rcpts(self):
        c = self.ready_client()
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<one@example.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<two@example.test>\r\nDATA\r\n")
        replies = [c.reply() for _ in range(5)]
        self.assertEqual([r[0] for r in replies], [250, 250, 550, 250, 354])
        self.assertEqual(replies[2][1], ["550 5.1.1 <rejected>: Recipient address rejected"])
        c.send(b"x\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)

    def test_deep_pipeline_replies_in_order(self):
        """More commands in flight than the pending queue keeps inside the
        session (16) and than it ever holds (128): local and relayed replies
        interleaved, in order, twice (the queue moves to the heap and back)."""
        c = self.ready_client()
        for round in range(2):
            lines, codes = [b"MAIL FROM:<a@example.test>"], [250]
            for i in range(100):
                # every 10th: a refusal by the proxy itself (10 per message
                # delivered: under the limit of 20 errors without one)
                local = [b"XCLIENT ADDR=192.0.2.1"] if i % 10 == 0 else []
                lines += [b"RCPT TO:<r%d@example.test>" % i] + local + [b"RCPT TO:<nobody@example.test>"]
                codes += [250] + [550] * len(local) + [550]
            lines.append(b"DATA")
            codes.append(354)
            c.send(b"\r\n".join(lines) + b"\r\n")
            self.assertEqual([c.reply()[0] for _ in codes], codes, "round %d" % round)
            c.send(b"round %d\r\n.\r\n" % round)
            self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        one, two = self.messages(2)
        self.assertEqual(split_trace(one)[1], b"round 0\r\n")
        self.assertEqual(split_trace(two)[1], b"round 1\r\n")


class RejectsData(ProxyCase):
    sink_args = ("--reject-data",)

    def test_data_rejection_relayed(self):
        c = self.ready_client()
        self.assertEqual(self.send_message(c),
                         (554, ["554 5.7.1 Message rejected by content filter"]))
        self.assertEqual(self.sink.messages(), [])
        self.assertEqual(c.cmd("QUIT")[0], 221)
        proxy = self.proxy
        self.stop_proxy()
        msg = proxy.log_lines("message")
        self.assertEqual(len(msg), 1, proxy.log())
        f = log_fields(msg[0])
        self.assertNotEqual(f.get("result"), "accepted", msg[0])
        self.assertEqual(f.get("code"), "554", msg[0])


class ClosesAfterData(ProxyCase):
    """The backend takes the whole message and drops the connection without
    a reply: the client must not be told the message was accepted."""
    sink_args = ("--close-after-data",)

    def test_lost_before_final_reply_is_421(self):
        c = self.ready_client()
        code, lines = self.send_message(c)
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.4.2"), lines)
        self.assertTrue(c.closed())
        self.assertEqual(self.sink.messages(), [])


class HalfCloseAfterTheDot(ProxyCase):
    """shutdown(SHUT_WR) right after the final dot, before the backend has
    answered it: the client still gets the 250 (without it, it would send
    the message again), then the session ends."""
    sink_args = ("--eod-delay", "0.5")

    def test_reply_to_the_dot_still_arrives(self):
        c = self.ready_client(tls=False)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY + b".\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertTrue(c.closed())
        self.messages(1)
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")))
        f = log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["result"], f["messages"]), ("client-closed", "1"), f)
        m = log_fields(self.proxy.log_lines("message")[0])
        self.assertEqual(m["result"], "accepted", m)

    def test_half_close_inside_data_delivers_nothing(self):
        c = self.ready_client(tls=False)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY)  # no final dot
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed())
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")))
        self.assertEqual(log_fields(self.proxy.log_lines("session")[0])["result"], "client-closed")
        # the backend saw the connection end inside DATA: no dot, nothing stored
        self.assertTrue(poll(lambda: b"(connection lost in DATA)" in self.sink.lines()),
                        self.sink.lines())
        self.assertEqual(self.sink.messages(), [])


class BackendLostMidSession(ProxyCase):
    def test_backend_killed_between_commands(self):
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.sink.stop()  # SIGTERM to the sink's PID: its sockets close
        code, lines = c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.4.2"), lines)
        self.assertTrue(c.closed())


class ResetCase(ProxyCase):
    """After STARTTLS the backend forgets the plaintext envelope: RSET
    reaches it before any command from inside TLS. A backend offering
    PIPELINING gets the RSET in front of the client's next command (one
    write); one without gets it alone, as soon as the handshake is done."""

    def handshake_with_envelope(self):
        c = self.client()
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<early@example.test>")[0], 250)
        c.starttls()
        return c

    def finish_session(self, c):
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<late@example.test>")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(poll(lambda: b"QUIT" in self.sink.lines()))
        self.assertEqual(self.sink.lines(), [
            b"EHLO client.example", b"MAIL FROM:<early@example.test>", b"RSET",
            b"EHLO client.example", b"MAIL FROM:<late@example.test>", b"QUIT"])


class ResetAfterStarttls(ResetCase):
    def test_pipelining_backend_gets_rset_with_the_next_command(self):
        c = self.handshake_with_envelope()
        time.sleep(0.5)  # the handshake is over on both sides: nothing was sent alone
        self.assertNotIn(b"RSET", self.sink.lines())
        self.finish_session(c)


class ResetAfterStarttlsNoPipelining(ResetCase):
    sink_args = ("--ehlo-caps", "SIZE 52428800,8BITMIME,ENHANCEDSTATUSCODES")

    def test_rset_alone_after_the_handshake(self):
        c = self.handshake_with_envelope()
        self.assertTrue(poll(lambda: b"RSET" in self.sink.lines()),
                        "no RSET before the client's next command: %r" % self.sink.lines())
        self.finish_session(c)


class ContentBeforeThe354(ProxyCase):
    """A client that sends its message right behind DATA, without waiting
    for the 354, in a separate segment (the proxy keeps reading while it
    waits for the reply): those bytes are held and become content only after
    the backend's 354, never commands."""

    def test_early_content_is_held_until_354(self):
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        c.send(b"DATA\r\n")
        c.send(b"NOOP\r\n" + BODY + b".\r\n")
        self.assertEqual(c.reply()[0], 354)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        header, rest = self.one_message()
        self.assertEqual(rest, b"NOOP\r\n" + BODY_UNSTUFFED)
        self.assertNotIn(b"NOOP", self.sink.lines())


class SlowQuit(ProxyCase):
    """QUIT with nothing owed is answered by the proxy at once: the client's
    221 never waits for a backend that is slow (here: silent) to say bye.
    The backend still gets its QUIT, then the proxy closes the connection."""
    sink_args = ("--silent-quit",)

    def test_221_without_the_backends(self):
        c = self.ready_client()
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertEqual(c.cmd("QUIT"), (221, ["221 2.0.0 Bye"]))
        self.assertTrue(c.closed())
        self.assertTrue(poll(lambda: b"(closed by the peer after QUIT)" in self.sink.lines()),
                        self.sink.lines())
        self.assertEqual(self.sink.lines()[-2:], [b"QUIT", b"(closed by the peer after QUIT)"])
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")), self.proxy.log())
        fields = log_fields(self.proxy.log_lines("session")[-1])
        self.assertEqual(fields["result"], "ok", fields)


class SlowQuitPipelined(ProxyCase):
    """Behind a pipelined transaction QUIT is relayed in order: the client
    hears nothing the backend did not say (here it says nothing to QUIT, so
    the proxy's command_timeout ends the session with a 421)."""
    sink_args = ("--silent-quit",)
    listeners = {"in": {"command_timeout": "2s"}}

    def test_pipelined_quit_waits_for_the_replies_owed(self):
        c = self.ready_client()
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 250])
        self.assertTrue(c.silent(1.0))
        self.assertEqual(self.sink.lines()[-1], b"QUIT")
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(c.closed())


class PipelinedWrites(ProxyCase):
    """A pipelined group costs one write each way: the commands of one client
    read reach the backend together, and the replies of one backend read
    reach the client together (plaintext connections included, which have
    no TLS records to gather them in). Seen in the proxy's own system calls;
    the sink answers a group in one write, as Postfix's smtpd does."""

    GROUP = b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n" \
            b"RCPT TO:<c@example.test>\r\nDATA\r\n"

    def pipelined_group(self, tls):
        c = self.ready_client(tls=tls)
        trace = Syscalls(self.tmp, self.proxy.pid)
        try:
            c.send(self.GROUP)
            self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
            c.send(BODY + b".\r\n")
            self.assertEqual(c.reply()[0], 250)
        finally:
            calls = trace.stop()
        self.assertEqual(self.messages(1)[0].count(BODY_UNSTUFFED), 1)
        to_backend = [w for w in calls if b"MAIL FROM:<a@example.test>" in w]
        self.assertEqual(to_backend, [self.GROUP], calls)
        return calls

    def test_plaintext_client_group_is_one_write_each_way(self):
        calls = self.pipelined_group(tls=False)
        to_client = [w for w in calls if b"354 End data" in w]
        self.assertEqual(to_client, [b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
                                     b"354 End data with <CR><LF>.<CR><LF>\r\n"], calls)

    def test_tls_client_group_is_one_write_to_the_backend(self):
        self.pipelined_group(tls=True)

    def test_held_content_reaches_the_backend_in_one_write(self):
        # Content sent behind DATA waits for the backend's 354; what that
        # reply releases (the message and the QUIT behind it) leaves in one
        # write, not one per command.
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        trace = Syscalls(self.tmp, self.proxy.pid)
        try:
            c.send(b"DATA\r\n" + BODY + b".\r\nQUIT\r\n")
            self.assertEqual([c.reply()[0] for _ in range(3)], [354, 250, 221])
        finally:
            calls = trace.stop()
        self.assertEqual(self.messages(1)[0].count(BODY_UNSTUFFED), 1)
        released = [w for w in calls if BODY_UNSTUFFED[:20] in w or w == b"QUIT\r\n"]
        self.assertEqual(len(released), 1, calls)
        self.assertTrue(released[0].endswith(b"\r\n.\r\nQUIT\r\n"), released)

    def test_backend_socket_registered_once(self):
        # Reading is asked for with the connect: libuv registers the backend
        # socket once for both and then drops POLLOUT (ADD, MOD), where
        # asking in on_connect cost an ADD that failed with EEXIST and a
        # third call.
        trace = Syscalls(self.tmp, self.proxy.pid, calls="trace=connect,epoll_ctl")
        try:
            c = self.ready_client(tls=False)
            self.assertEqual(c.cmd("QUIT")[0], 221)
            self.assertTrue(c.closed())
        finally:
            lines = trace.lines()
        fd = [re.search(r"connect\((\d+),", l).group(1) for l in lines if " connect(" in l]
        self.assertEqual(len(fd), 1, lines)
        ops = [re.search(r"EPOLL_CTL_(\w+)", l).group(1) for l in lines
               if re.search(r"epoll_ctl\(\d+, EPOLL_CTL_\w+, %s," % fd[0], l)]
        self.assertEqual(ops[:2], ["ADD", "MOD"], lines)
        self.assertNotIn("ADD", ops[1:], lines)
        self.assertFalse([l for l in lines if "EEXIST" in l], lines)

    def test_221_leaves_with_the_close_notify(self):
        c = self.ready_client()
        trace = Syscalls(self.tmp, self.proxy.pid)
        try:
            self.assertEqual(c.cmd("QUIT")[0], 221)
            self.assertTrue(c.closed())
        finally:
            calls = trace.stop()
        to_client = [w for w in calls if w.startswith(b"\x17\x03\x03")]
        self.assertEqual(len(to_client), 1, calls)
        records, w = 0, to_client[0]
        while w:  # the 221 and the (encrypted) close_notify alert
            self.assertEqual(w[:3], b"\x17\x03\x03", to_client)
            w = w[5 + int.from_bytes(w[3:5], "big"):]
            records += 1
        self.assertEqual(records, 2, to_client)


class Unreachable(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def proxy(self, backend_port, **keys):
        self.backend_port = backend_port
        keys["backend"] = "127.0.0.1:%d" % backend_port
        p = Proxy(self.tmp, {"in": keys})
        self.addCleanup(p.stop)
        return p

    def test_backend_down_is_421_and_logged(self):
        p = self.proxy(free_port())
        with Client(p.port()) as c:
            code, lines = c.reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(lines[0].startswith("421 4.4.1"), lines)
            self.assertTrue(c.closed())
        self.assertEqual(p.stop(), 0)
        line = [l for l in p.log().splitlines() if " session " in l]
        self.assertEqual(len(line), 1, p.log())
        f = log_fields(line[0])
        self.assertNotEqual(f.get("result"), "ok", line[0])
        self.assertEqual(f.get("backend"), "127.0.0.1:%d" % self.backend_port)

    def test_backend_down_on_implicit_listener(self):
        p = self.proxy(free_port(), starttls="implicit")
        with Client(p.port(), implicit=True) as c:
            code, lines = c.reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(lines[0].startswith("421 4.4.1"), lines)

    def test_backend_silent_is_421(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        p = self.proxy(silent.getsockname()[1], greeting_timeout="1s")
        with Client(p.port()) as c:
            code, lines = c.reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(lines[0].startswith("421 4.4.2"), lines)
            self.assertTrue(c.closed())

    def test_backend_silent_client_talks_first(self):
        # A client that speaks before any greeting gets no 2xx either.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        p = self.proxy(silent.getsockname()[1], greeting_timeout="1s")
        with Client(p.port()) as c:
            c.send(b"EHLO x.example\r\nMAIL FROM:<a@example.test>\r\n")
            code, lines = c.reply()
            self.assertNotEqual(code // 100, 2, lines)
            self.assertTrue(c.closed())

    def test_backend_refusing_greeting_never_2xx(self):
        # A backend that answers 554 at connect: the client is not greeted
        # with a 2xx (the proxy may relay the 554 or defer with a 4xx).
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        self.addCleanup(srv.close)
        p = self.proxy(srv.getsockname()[1], greeting_timeout="3s")
        c = Client(p.port())
        self.addCleanup(c.close)
        conn, _ = srv.accept()
        self.addCleanup(conn.close)
        conn.sendall(b"554 5.3.2 busy, go away\r\n")
        code, lines = c.reply()
        self.assertIn(code // 100, (4, 5), lines)

    def test_backend_closing_before_its_greeting_is_421(self):
        """A backend that accepts and closes at once (a tcpwrapper refusal,
        an overloaded MTA): the client is told 421 4.4.2 at its greeting,
        not left to a timeout, and the session says backend-lost."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        self.addCleanup(srv.close)
        p = self.proxy(srv.getsockname()[1], greeting_timeout="30s")
        c = Client(p.port())
        self.addCleanup(c.close)
        srv.settimeout(10)
        conn, _ = srv.accept()
        conn.close()
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.4.2 "), lines)
        self.assertIn("mail server closed the connection", lines[0])
        self.assertTrue(c.closed())
        self.assertEqual(p.stop(), 0)
        f = log_fields([l for l in p.log().splitlines() if " session " in l][0])
        self.assertEqual(f["result"], "backend-lost", f)



class ScriptedBackend(unittest.TestCase):
    """The backend is this test's own socket (self.conn, read through
    self.backend): it says 220 and answers EHLO, then the test scripts it."""

    client_class = Client

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        self.addCleanup(srv.close)
        self.p = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % srv.getsockname()[1]}})
        self.addCleanup(self.p.stop)
        self.c = self.client_class(self.p.port())
        self.addCleanup(self.c.close)
        srv.settimeout(10)
        self.conn, _ = srv.accept()
        self.conn.settimeout(10)
        self.addCleanup(self.conn.close)
        self.backend = self.conn.makefile("rb")
        self.addCleanup(self.backend.close)
        self.conn.sendall(b"220 backend.test ESMTP\r\n")
        self.assertEqual(self.c.reply()[0], 220)
        self.c.send(b"EHLO client.example\r\n")
        self.assertEqual(self.backend.readline(), b"EHLO client.example\r\n")
        self.conn.sendall(b"250-backend.test\r\n250 8BITMIME\r\n")
        self.assertEqual(self.c.reply()[0], 250)

    def session_fields(self):
        self.assertTrue(poll(lambda: self.p.log_lines("session")), self.p.log())
        return log_fields(self.p.log_lines("session")[0])


class UnsolicitedReply(ScriptedBackend):
    """A reply the backend sends without a command in flight (a second
    reply to one command, or one out of nowhere) is a backend out of step
    with the client: relayed, it would be read as the answer to the
    client's next command, a 250 for a RCPT or a final dot the backend never
    saw. The client gets 421 4.4.2 instead, never that 2xx, and the session
    ends as backend-protocol."""

    def assert_421_and_closed(self, code, lines):
        self.assertEqual(code, 421, "the backend's unsolicited reply reached the client: %s"
                         % lines)
        self.assertTrue(lines[0].startswith("421 4.4.2"), lines)
        self.assertTrue(self.c.closed())
        self.assertNotIn(b"unsolicited", self.c.buf)
        f = self.session_fields()
        self.assertEqual(f["result"], "backend-protocol", f)
        # the proxy let go of the backend too (saying QUIT first)
        self.assertIn(self.backend.read(), (b"", b"QUIT\r\n"))
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])

    def test_reply_between_commands(self):
        self.conn.sendall(b"250 2.0.0 unsolicited\r\n")
        self.assert_421_and_closed(*self.c.reply())

    def test_second_reply_to_one_command(self):
        """What test/conformance's unsolicited_reply sends: two replies to
        MAIL in one write. The first is MAIL's; the second answers nothing."""
        self.c.send(b"MAIL FROM:<a@example.test>\r\n")
        self.assertEqual(self.backend.readline(), b"MAIL FROM:<a@example.test>\r\n")
        self.conn.sendall(b"250 2.1.0 Ok\r\n250 2.1.5 unsolicited\r\n")
        self.assertEqual(self.c.reply(), (250, ["250 2.1.0 Ok"]))
        self.assert_421_and_closed(*self.c.reply())


class BackendSays421(ScriptedBackend):
    """A backend that says 421 (shutting down, its own idle timeout, too
    busy) is closing the session: the client gets that 421 as the backend
    wrote it, then the proxy closes the connection, and the session ends
    as backend-closed. Whatever the client pipelined behind the command the
    421 answered gets no reply of its own (RFC 5321 3.8: after a 421 the
    client must not expect more), and nothing of it reaches the backend."""

    def assert_relayed_and_closed(self, code, lines):
        self.assertEqual((code, lines), (421, ["421 4.3.2 backend.test shutting down"]))
        self.assertTrue(self.c.closed())
        self.assertEqual(self.c.buf, b"", "more than the 421 reached the client")
        f = self.session_fields()
        self.assertEqual(f["result"], "backend-closed", f)
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])

    def test_421_between_commands(self):
        """The backend's idle timeout: a 421 with no command in flight."""
        self.conn.sendall(b"421 4.3.2 backend.test shutting down\r\n")
        self.assert_relayed_and_closed(*self.c.reply())

    def test_421_to_mail_with_more_pipelined(self):
        self.c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        self.assertEqual(self.backend.readline(), b"MAIL FROM:<a@example.test>\r\n")
        self.conn.sendall(b"421 4.3.2 backend.test shutting down\r\n")
        self.assert_relayed_and_closed(*self.c.reply())
        # the backend saw the group the client pipelined (the proxy forwards
        # it in one write) and nothing after its 421 but a possible QUIT
        rest = self.backend.read()
        self.assertTrue(rest.startswith(b"RCPT TO:<b@example.test>\r\nDATA\r\n")
                        or rest in (b"", b"QUIT\r\n"), rest)
        self.assertNotIn(b"\r\n.\r\n", rest)

    def test_421_to_the_final_dot_is_no_acceptance(self):
        """The message is not accepted: the sender must keep it."""
        self.c.send(b"MAIL FROM:<a@example.test>\r\n")
        self.backend.readline()
        self.conn.sendall(b"250 2.1.0 Ok\r\n")
        self.assertEqual(self.c.reply()[0], 250)
        self.c.send(b"RCPT TO:<b@example.test>\r\n")
        self.backend.readline()
        self.conn.sendall(b"250 2.1.5 Ok\r\n")
        self.assertEqual(self.c.reply()[0], 250)
        self.c.send(b"DATA\r\n")
        self.backend.readline()
        self.conn.sendall(b"354 go ahead\r\n")
        self.assertEqual(self.c.reply()[0], 354)
        self.c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(poll(lambda: b"\r\n.\r\n" in self.conn.recv(65536, socket.MSG_PEEK)))
        self.conn.sendall(b"421 4.3.2 backend.test shutting down\r\n")
        self.assert_relayed_and_closed(*self.c.reply())
        f = log_fields(self.p.log_lines("message")[0])
        self.assertEqual((f["result"], f["code"]), ("tempfail", "421"), f)


class SlowBackendReader(ScriptedBackend):
    """A backend that stops reading in the middle of a message (busy disk,
    a content filter): the proxy queues at most STP_CONN_WQ_HIGH (256 KiB)
    for it, then stops reading the client, and reads on once the backend
    has drained the queue; the message arrives whole, and the proxy's
    memory does not grow with it."""

    timeout = 90

    def rss_kb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    return int(l.split()[1])
        raise AssertionError("no VmRSS")

    def test_message_waits_for_the_backend_and_arrives_whole(self):
        for cmd, reply in ((b"MAIL FROM:<a@example.test>", b"250 2.1.0 Ok"),
                           (b"RCPT TO:<b@example.test>", b"250 2.1.5 Ok"),
                           (b"DATA", b"354 go ahead")):
            self.c.send(cmd + b"\r\n")
            self.assertEqual(self.backend.readline(), cmd + b"\r\n")
            self.conn.sendall(reply + b"\r\n")
            self.assertEqual(self.c.reply()[1], [reply.decode()])
        size = 16 * 1024 * 1024
        line = b"x" * 78 + b"\r\n"
        body = line * (size // len(line))
        before = self.rss_kb()
        sent = []
        t = threading.Thread(target=lambda: (self.c.sock.sendall(body + b".\r\n"),
                                             sent.append(1)), daemon=True)
        t.start()
        time.sleep(2)  # the backend reads nothing meanwhile
        self.assertFalse(sent, "the client could send 16 MB into a backend that reads nothing")
        grown = self.rss_kb() - before
        # (ASan's allocator keeps freed buffers in quarantine: more slack)
        self.assertLess(grown, 16384 if ASAN else 4096,
                        "the proxy buffered %d kB for the stalled backend" % grown)
        got = bytearray()
        while not got.endswith(b"\r\n.\r\n"):
            chunk = self.conn.recv(1 << 20)
            self.assertTrue(chunk, "the backend connection closed")
            got += chunk
        t.join(30)
        self.assertTrue(sent)
        self.assertTrue(got.startswith(b"Received: "), got[:100])
        self.assertTrue(got.endswith(body + b".\r\n"), "the message did not arrive whole")
        self.conn.sendall(b"250 2.0.0 Ok: queued\r\n")
        self.assertEqual(self.c.reply()[0], 250)


class ReplyDuringData(ScriptedBackend):
    """The backend answers in the middle of the message (after its 354,
    before the final dot): it has ended the message on its own. None of
    the rest may reach it, and it never gets the dot (it drops what it got).
    A 4xx or 5xx is its answer to the message and reaches the client as
    written, as the reply to the client's final dot (the client reads no
    reply before it, and the rest of its data is read and dropped), so a
    sender told 5xx bounces the message instead of retrying it for days;
    the session then ends. A 2xx is never relayed: the client gets 421
    4.4.2. Each case has its message line."""

    def in_data(self):
        self.c.send(b"MAIL FROM:<a@example.test>\r\n")
        self.assertEqual(self.backend.readline(), b"MAIL FROM:<a@example.test>\r\n")
        self.conn.sendall(b"250 2.1.0 Ok\r\n")
        self.assertEqual(self.c.reply()[0], 250)
        self.c.send(b"RCPT TO:<b@example.test>\r\n")
        self.assertEqual(self.backend.readline(), b"RCPT TO:<b@example.test>\r\n")
        self.conn.sendall(b"250 2.1.5 Ok\r\n")
        self.assertEqual(self.c.reply()[0], 250)
        self.c.send(b"DATA\r\n")
        self.assertEqual(self.backend.readline(), b"DATA\r\n")
        self.conn.sendall(b"354 go ahead\r\n")
        self.assertEqual(self.c.reply()[0], 354)
        self.c.send(b"Subject: x\r\n")
        while self.backend.readline() != b"Subject: x\r\n":  # past the trace header
            pass

    def message_fields(self):
        self.assertTrue(poll(lambda: self.p.log_lines("message")), self.p.log())
        m = [log_fields(l) for l in self.p.log_lines("message")]
        self.assertEqual(len(m), 1, m)
        return m[0]

    def assert_relayed_at_the_dot(self, reply):
        # The rest of the message (larger than any buffer on the way) and
        # the dot: read and dropped by the proxy, never sent to the backend.
        rest = b"".join(b"line %06d of the rest of the message\r\n" % i for i in range(8000))
        self.c.send(rest + b".\r\n")
        code, lines = self.c.reply()
        self.assertEqual((code, lines), (int(reply[:3]), [reply]))
        self.assertTrue(self.c.closed())
        self.assertEqual(self.c.buf, b"")
        f = self.message_fields()
        self.assertEqual((f["from"], f["rcpts"], f["code"], f["reply"]),
                         ("<a@example.test>", "1", reply[:3], reply[4:]), f)
        self.assertEqual(f["result"], "rejected" if reply[0] == "5" else "tempfail", f)
        self.assertGreaterEqual(int(f["size"]), len(rest))
        s = self.session_fields()
        self.assertEqual((s["result"], s["error"], s["messages"], s["rejected"]),
                         ("message-refused", "backend replied %s during DATA" % reply[:3], "0",
                          "1"), s)
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])

    def test_5xx_and_close_is_the_reply_to_the_dot(self):
        self.in_data()
        self.conn.sendall(b"552 5.3.4 Message size exceeds fixed limit\r\n")
        self.conn.shutdown(socket.SHUT_WR)  # and closes (it still reads)
        # the proxy lets go of the backend at once, with nothing more sent
        self.assertEqual(self.backend.read(), b"")
        self.assert_relayed_at_the_dot("552 5.3.4 Message size exceeds fixed limit")

    def test_4xx_is_relayed_too(self):
        self.in_data()
        self.conn.sendall(b"452 4.3.1 Insufficient system storage\r\n")
        self.assertEqual(self.backend.read(), b"")
        self.assert_relayed_at_the_dot("452 4.3.1 Insufficient system storage")

    def test_421_is_relayed_at_once(self):
        # An inbound backend closing in the middle of DATA: its 421 reaches
        # the client at once (not at the dot: the proxy is not the client's
        # own server, the backend is), and the session ends.
        self.in_data()
        self.conn.sendall(b"421 4.3.2 Service shutting down\r\n")
        self.assertEqual(self.c.reply(), (421, ["421 4.3.2 Service shutting down"]))
        self.assertTrue(self.c.closed())
        self.assertEqual(self.backend.read(), b"")  # never the dot
        f = self.message_fields()
        self.assertEqual((f["result"], f["code"], f["rcpts"]), ("tempfail", "421", "1"), f)
        s = self.session_fields()
        self.assertEqual((s["result"], s["error"], s["rejected"]),
                         ("backend-closed", "backend sent 421 during DATA", "1"), s)
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])

    def test_client_leaving_before_the_dot_still_gets_the_message_line(self):
        # The backend's 552 is kept for the dot, but the client closes
        # without sending it: the message still has its line (it had none).
        self.in_data()
        self.conn.sendall(b"552 5.3.4 Message size exceeds fixed limit\r\n")
        self.assertEqual(self.backend.read(), b"")
        self.c.sock.close()
        f = self.message_fields()
        self.assertEqual((f["result"], f["code"], f["reply"]),
                         ("rejected", "552", "5.3.4 Message size exceeds fixed limit"), f)
        s = self.session_fields()
        self.assertEqual((s["result"], s["messages"], s["rejected"]),
                         ("client-closed", "0", "1"), s)
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])

    def test_2xx_is_never_relayed(self):
        self.in_data()
        self.conn.sendall(b"250 2.0.0 Ok: queued as EARLY\r\n")
        code, lines = self.c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.4.2"), lines)
        self.assertTrue(self.c.closed())
        self.assertNotIn(b"EARLY", self.c.buf)
        self.assertEqual(self.backend.read(), b"")  # never the dot
        f = self.message_fields()
        self.assertEqual((f["result"], f["code"], f["from"], f["rcpts"]),
                         ("tempfail", "421", "<a@example.test>", "1"), f)
        s = self.session_fields()
        self.assertEqual((s["result"], s["error"]),
                         ("backend-protocol", "backend replied 250 during DATA"), s)
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])


class ClientStillSending(ScriptedBackend):
    """The session ends while the client is still writing its message (here
    the backend closes in the middle of DATA, after 256 KB of it): the
    client gets the proxy's 421, then the end of the stream, a FIN (TLS:
    the close_notify first), and its writes go on meanwhile. The proxy
    shuts its sending side down after the reply and reads and drops what
    still comes until the client closes (a lingering close). It closed with
    the client's bytes unread, so the kernel answered with a reset: the
    client's writes failed (EPIPE, ECONNRESET) and a client that reads only
    after writing (Windows drops what it has not read at a reset) lost the
    421 and saw "connection reset"."""

    client_class = StreamingClient
    LINE = b"x" * 78 + b"\r\n"

    def backend_answers(self, *exchange):
        for cmd, reply in zip(exchange[::2], exchange[1::2]):
            self.assertEqual(self.backend.readline(), cmd + b"\r\n")
            self.conn.sendall(reply + b"\r\n")

    def backend_closes_after(self, nbytes):
        """In a thread: the backend reads nbytes of the message, then closes."""
        def run():
            got = len(self.backend.peek())  # what the line reader already holds
            while got < nbytes:
                d = self.conn.recv(65536)
                if not d:
                    return
                got += len(d)
            self.conn.shutdown(socket.SHUT_RDWR)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def lost_mid_data(self, tls):
        if tls:
            self.c.starttls()
            self.backend_answers(b"RSET", b"250 2.0.0 Ok")  # the proxy's, after the handshake
            self.c.send(b"EHLO client.example\r\n")
            self.backend_answers(b"EHLO client.example", b"250-backend.test\r\n250 8BITMIME")
            self.assertEqual(self.c.reply()[0], 250)
        self.c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n")
        self.backend_answers(b"MAIL FROM:<a@example.test>", b"250 2.1.0 Ok",
                             b"RCPT TO:<b@example.test>", b"250 2.1.5 Ok")
        self.assertEqual([self.c.reply()[0] for _ in range(2)], [250, 250])
        self.c.send(b"DATA\r\n")
        self.backend_answers(b"DATA", b"354 go ahead")
        self.assertEqual(self.c.reply()[0], 354)
        t = self.backend_closes_after(256 * 1024)
        r = self.c.stream(self.LINE * 800, 8 * 1024 * 1024)  # the whole message, 8 MB
        t.join(10)
        self.assertIsNone(r["write_error"], r)
        self.assertEqual(r["end"], "eof", r)
        lines = r["got"].split(b"\r\n")
        self.assertEqual(len(lines), 2, r)  # one reply line, then nothing
        self.assertTrue(lines[0].startswith(b"421 4.4.2 mx.example.test Error: connection to "
                                            b"mail server lost"), r)
        self.assertEqual(r["close_notify"], tls, r)
        self.assertGreaterEqual(r["written"], 8 * 1024 * 1024, r)
        self.c.close()
        f = self.session_fields()
        self.assertEqual((f["result"], f["tls"] != "none"), ("backend-lost", tls), f)
        self.assertEqual(self.p.stop(), 0, self.p.log()[-3000:])

    def test_plaintext_client_reads_the_reply_then_eof(self):
        self.lost_mid_data(tls=False)

    def test_tls_client_reads_the_reply_and_close_notify_then_eof(self):
        self.lost_mid_data(tls=True)
