#!/usr/bin/env python3
"""Runs the integration tests; prints PASS/FAIL per test and 'N passed, N failed'."""
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


class Result(unittest.TextTestResult):
    pass


def main():
    if not os.environ.get("STP_CERTS"):
        certs = os.path.join(ROOT, "test/certs/out")
        subprocess.run(["bash", os.path.join(ROOT, "test/certs/gen.sh"), certs], check=True)
        os.environ["STP_CERTS"] = certs
    import harness
    harness.CERTS = os.environ["STP_CERTS"]
    pattern = sys.argv[1] if len(sys.argv) > 1 else "test_*.py"
    suite = unittest.defaultTestLoader.discover(HERE, pattern=pattern)
    passed = failed = 0

    def walk(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from walk(t)
            else:
                yield t

    for test in walk(suite):
        r = unittest.TestResult()
        test.run(r)
        name = test.id().replace("test_", "", 1)
        problems = r.failures + r.errors + [(t, "unexpected success") for t in
                                            r.unexpectedSuccesses]
        if problems:
            failed += 1
            print("FAIL %s" % name, flush=True)
            for _, tb in problems:
                print("    " + tb.replace("\n", "\n    "), flush=True)
        else:
            passed += 1
            print("PASS %s" % name, flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
