#!/usr/bin/env python3
"""Runs the integration tests (unittest discovery of test_*.py here), each
under a per-test timeout, printing one line per test:

  PASS module.Class.test_name
  FAIL module.Class.test_name: reason        (then the traceback, indented)

and finally exactly "N passed, N failed"; exits 1 on any failure.

  run.py [SUBSTRING ...]    only tests whose name contains one of them

Env: STP_BIN, STP_CERTS, STP_ASAN (see harness.py); STP_TEST_TIMEOUT (seconds
per test, default 60; a TestCase may set a `timeout` attribute; doubled when
STP_ASAN is set).
"""
import os
import signal
import subprocess
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


class TestTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise TestTimeout("test timed out")


def walk(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from walk(t)
        else:
            yield t


def reason_of(tb):
    """The last line of a traceback: the exception and its message."""
    lines = [l for l in tb.strip().splitlines() if l.strip()]
    return lines[-1].strip()[:300] if lines else "?"


def main():
    if not os.environ.get("STP_CERTS"):
        certs = os.path.join(ROOT, "test/certs/out")
        subprocess.run(["bash", os.path.join(ROOT, "test/certs/gen.sh"), certs], check=True)
        os.environ["STP_CERTS"] = certs
    import harness
    harness.CERTS = os.environ["STP_CERTS"]
    if not os.access(harness.BIN, os.X_OK):
        print("FAIL setup: no proxy binary at %s (set STP_BIN or bazel build)" % harness.BIN)
        print("0 passed, 1 failed")
        return 1

    filters = sys.argv[1:]
    default_timeout = float(os.environ.get("STP_TEST_TIMEOUT", "60"))
    factor = 2 if harness.ASAN else 1
    loader = unittest.TestLoader()
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    signal.signal(signal.SIGALRM, on_alarm)
    passed = failed = 0
    started = time.time()

    for test in walk(suite):
        name = test.id()
        if filters and not any(f in name for f in filters):
            continue
        if isinstance(test, unittest.loader._FailedTest):  # an import error
            name = "import " + name.split(".")[-1]
        r = unittest.TestResult()
        limit = getattr(test, "timeout", default_timeout) * factor
        signal.setitimer(signal.ITIMER_REAL, limit)
        t0 = time.time()
        try:
            test.run(r)
        except TestTimeout:  # raised outside the test's own try (setUp/cleanup edge)
            r.errors.append((test, "TestTimeout: test timed out after %ss\n" % limit))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for proxy in harness.STARTED:  # each proxy the test started: a clean exit
            rc = proxy.stop()
            if proxy.expected_exit is not None and rc != proxy.expected_exit:
                try:
                    tail = proxy.log()[-3000:]
                except OSError:  # its directory is gone with the test's cleanup
                    tail = "(log removed)"
                r.failures.append((test, "proxy %s exited %s, not %s; log tail:\n%s"
                                   % (proxy.ini, rc, proxy.expected_exit, tail)))
        del harness.STARTED[:]
        problems = (r.failures + r.errors +
                    [(t, "unexpected success") for t in r.unexpectedSuccesses] +
                    [(t, "skipped: " + why) for t, why in r.skipped])
        if problems:
            failed += 1
            print("FAIL %s: %s" % (name, reason_of(problems[0][1])), flush=True)
            for _, tb in problems:
                print("    " + tb.rstrip().replace("\n", "\n    "), flush=True)
        else:
            passed += 1
            print("PASS %s" % name, flush=True)
        if time.time() - t0 > limit * 0.5:
            print("    (slow: %.1fs of %.0fs)" % (time.time() - t0, limit), flush=True)
    sys.stderr.write("integration suite took %.1fs\n" % (time.time() - started))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        print("0 passed, 1 failed")
        sys.exit(1)
