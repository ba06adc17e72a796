"""Re-test surviving mutants with given test files, in one process (run from mutmut's ``mutants/`` directory).

usage: KC_LOG=log.txt python killcheck.py RESULTS_FILE PREFIX TESTFILE [TESTFILE ...] [pytest args]

RESULTS_FILE is the output of ``mutmut results`` (``name: status`` lines); every ``survived`` mutant whose
name starts with PREFIX is activated in turn through mutmut's trampoline (``MUTANT_UNDER_TEST``) and the
test files are run; a failing run kills it. The test files must be copied under ``mutants/tests`` first,
and the unmutated run (printed first as ``baseline rc``) must pass, or every mutant reads as killed.
Prints and appends to $KC_LOG one ``KILLED name`` / ``SURVIVED name`` line per mutant."""
import os, sys, io, contextlib
sys.path.insert(0, os.getcwd())
import pytest
res, prefix, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
names = [l.split(":")[0].strip() for l in open(res) if l.strip().endswith("survived") and l.strip().startswith(prefix)]
os.environ.pop("MUTANT_UNDER_TEST", None)
rc = pytest.main(tests + ["-q", "-x", "-p", "no:cacheprovider", "-W", "ignore"])
print("baseline rc", rc, flush=True)
if rc != 0:
    sys.exit("the unmutated tests fail: fix them (or deselect) before re-testing mutants")
k = 0
log = open(os.environ.get("KC_LOG", "/dev/null"), "a")
for n in names:
    os.environ["MUTANT_UNDER_TEST"] = n
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            r = pytest.main(tests + ["-q", "-x", "-p", "no:cacheprovider", "-W", "ignore"])
        except BaseException as e:
            r = 99
    k += r != 0
    print(("KILLED  " if r != 0 else "SURVIVED"), n, flush=True)
    print(("KILLED  " if r != 0 else "SURVIVED"), n, file=log, flush=True)
print(f"killed {k}/{len(names)}")
