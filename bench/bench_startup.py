"""
Time how long C{gossip say} and C{gossip ask} take to start and finish on a
small log, beside a bare C{python -c pass}, in one run, and print the ratios.

    python bench/bench_startup.py                          # this checkout
    python bench/bench_startup.py --code before=/tmp/old --code after=.
    python bench/bench_startup.py --installed after=/tmp/venv   # its bin/gossip

Each checkout named is copied, without its bytecode, to a directory under
/tmp and compiled there, as an install has it.  Every command runs --runs
times; the commands take turns, so that a machine whose speed drifts slows
them alike.  --installed times the C{gossip} command of a virtualenv gossip
was installed in (C{pip install --no-deps .}), as users run it.  See
bench/README.md.
"""

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the wrapper pip writes for a console-scripts entry point does, as
# gossip was installed until bin/gossip replaced it.
_SCRIPT = (
    "import re, sys\n"
    "from gossip.cli.main import run\n"
    "sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "sys.exit(run())\n"
)


def install(label, checkout, into):
    """
    Copy C{checkout}'s gossip package under C{into} and compile it.

    @return: the directory to put on C{PYTHONPATH}.
    """
    target = os.path.join(into, label)
    shutil.copytree(
        os.path.join(checkout, "gossip"),
        os.path.join(target, "gossip"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.c"),
    )
    compileall.compile_dir(target, quiet=1)
    return target


def environment(path):
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH")
    }
    env["PYTHONPATH"] = path
    return env


def runOnce(argv, env):
    """
    Run C{argv} to completion, in C{/} so that C{-m} and C{-c} find gossip
    on C{PYTHONPATH}, not in the current directory.

    @return: its wall time and its CPU time (user and system), in seconds.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv} exited with {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def commands(python, trees, installed, sayLog, askLog):
    """
    The commands to time: name, argv and environment.  C{say} appends to
    C{sayLog}; C{ask} reads C{askLog}, which holds 20 adds, one of them
    matching.
    """
    yield "python -c pass", [python, "-c", "pass"], environment("")
    for label, path in trees:
        env = environment(path)
        yield f"{label}: say", [python, "-m", "gossip", "say", sayLog, "n=1"], env
        yield f"{label}: ask", [python, "-m", "gossip", "ask", askLog, "n=3"], env
        yield f"{label}: say (pip's console-script wrapper)", [python, "-c", _SCRIPT, "say", sayLog, "n=1"], env
    for label, venv in installed:
        gossip = os.path.join(venv, "bin", "gossip")
        env = environment("")
        yield f"{label}: installed gossip say", [gossip, "say", sayLog, "n=1"], env
        yield f"{label}: installed gossip ask", [gossip, "ask", askLog, "n=3"], env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--code",
        action="append",
        metavar="LABEL=CHECKOUT",
        help="a checkout to time (repeatable); default: this one, as 'gossip'",
    )
    parser.add_argument(
        "--installed",
        action="append",
        default=[],
        metavar="LABEL=VIRTUALENV",
        help="a virtualenv whose bin/gossip to time (repeatable)",
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run")
    parser.add_argument("--runs", type=int, default=40)
    options = parser.parse_args()

    checkouts = [code.partition("=")[::2] for code in options.code or [f"gossip={ROOT}"]]
    installed = [venv.partition("=")[::2] for venv in options.installed]
    scratch = tempfile.mkdtemp(prefix="gossip-bench-startup-")
    try:
        trees = [(label, install(label, checkout, scratch)) for label, checkout in checkouts]
        sayLog = os.path.join(scratch, "say.log")
        askLog = os.path.join(scratch, "ask.log")
        for n in range(20):
            runOnce([options.python, "-m", "gossip", "say", askLog, f"n={n}"], environment(trees[0][1]))
        timed = list(commands(options.python, trees, installed, sayLog, askLog))
        for name, argv, env in timed:
            runOnce(argv, env)
        times = {name: [] for name, argv, env in timed}
        for _ in range(options.runs):
            for name, argv, env in timed:
                times[name].append(runOnce(argv, env))
    finally:
        shutil.rmtree(scratch)

    print(f"{options.python}, {options.runs} runs each, load average {os.getloadavg()}")
    base = times["python -c pass"]
    baseWall = statistics.median(wall for wall, cpu in base)
    baseCPU = statistics.median(cpu for wall, cpu in base)
    print("| command | wall, median | wall, best | x pass (median) | CPU, median | x pass (CPU) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, figures in times.items():
        walls = [wall for wall, cpu in figures]
        cpu = statistics.median(cpu for wall, cpu in figures)
        wall = statistics.median(walls)
        print(
            f"| {name} | {wall * 1e3:.1f} ms | {min(walls) * 1e3:.1f} ms | {wall / baseWall:.2f} "
            f"| {cpu * 1e3:.1f} ms | {cpu / baseCPU:.2f} |"
        )


if __name__ == "__main__":
    main()
