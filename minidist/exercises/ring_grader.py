"""Grading the ring exercise: one ``mpiexec -n N`` job per N runs `ring_worker` on every
solution given, and its case lines are read as they come.

A learner's deadlock must not freeze the grader: the job runs in its own process group,
and when no case has finished for `case_timeout` seconds the whole group is killed and the
case that was running is reported as a hang. A solution that still raises
NotImplementedError is found first, in this process, on a one-rank stand-in, so a scaffold
costs no mpiexec launch.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

from .grading import CaseResult, Graded, NotImplementedYet, Problem, load_solution, unimplemented

SIZES = (1, 2, 3, 4, 5)
MARK = "@minidist-ring "  # starts each line of ring_worker's events
ERRORS_ENV = "MINIDIST_RING_ERRORS"  # the folder where ranks note their learner errors
_DECODER = json.JSONDecoder()
ROOT = Path(__file__).resolve().parents[2]  # the checkout holding the minidist package


def mpiexec() -> str:
    """The mpiexec beside this Python (the venv's MPICH), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def probe(path) -> Graded | None:
    """A failed grade if `path` does not import or its ring_allreduce still raises
    NotImplementedError; None when it must be graded under mpiexec."""
    try:
        module = load_solution(path, "_minidist_ring_probe")
    except Problem as e:
        return Graded([CaseResult("ring", f"import {path}", str(e))])
    if unimplemented(module, ("ring_allreduce",)):
        problem = NotImplementedYet("ring_allreduce")
        return Graded([CaseResult("ring", "every case", str(problem), problem.function)],
                      ["ring_allreduce"])
    return None


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _launch(n: int, paths, errors_folder: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               **{ERRORS_ENV: errors_folder},
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "minidist.exercises.ring_worker",
           *map(str, paths)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def _follow(proc, case_timeout, start_timeout, on_result):
    """Read the job's events, calling ``on_result(solution index, CaseResult)`` for each
    finished case; returns (the case left running or None, whether it hung, the last
    lines of other output)."""
    lines, tail, running = queue.Queue(), deque(maxlen=15), None
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen_event = False
    while True:
        try:
            line = lines.get(timeout=case_timeout if seen_event else start_timeout)
        except queue.Empty:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return running, True, tail
        if line is None:
            proc.wait()
            return running, False, tail
        if not line.startswith(MARK):  # the learner's prints, MPI's messages
            tail.append(line)
            continue
        seen_event, event = True, _DECODER.raw_decode(line, len(MARK))[0]
        if event.get("start"):
            running = (event["solution"], event["case"])
        else:
            running = None
            on_result(event["solution"], CaseResult("ring", event["case"], event["problem"],
                                                    event["not_implemented"]))


def _noted_errors(folder: str, running) -> list[str]:
    """What the ranks noted (ring_worker.note_error) during the case `running`."""
    found = []
    for path in sorted(Path(folder).glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if running and (event["solution"], event["case"]) == tuple(running):
                found.append(f"{path.stem.replace('rank', 'rank ')}: {event['error']}")
    return found


def _stopped(n, running, hung, proc, tail, errors, case_timeout) -> CaseResult:
    """The result of the case a job stopped in (hang or crash), with what ranks noted."""
    last = " | ".join(list(tail)[-5:]) or "no output"
    raised = f"; before it, {'; '.join(errors)}" if errors else ""
    if running is None:
        word = "started no case in time" if hung else f"ended with exit code {proc.returncode}"
        return CaseResult("ring", f"N={n} (mpiexec job)", f"mpiexec -n {n} {word}: {last}")
    if hung:
        return CaseResult("ring", running[1], f"hang: nothing finished for {case_timeout:g} s, the job "
                          "was killed (a rank waits for a message that never comes: e.g. a Recv with "
                          "no matching Send, or every rank in a blocking Send first); later cases at "
                          f"N={n} were not run{raised}")
    return CaseResult("ring", running[1], f"the job ended with exit code {proc.returncode} during this "
                      f"case (later cases at N={n} not run){raised}: {last}")


def grade_ring(paths, sizes=SIZES, case_timeout: float = 20.0, start_timeout: float = 120.0,
               show=None) -> dict:
    """{path: Graded} for every ring solution in `paths`, N = each of `sizes`;
    ``show(path, CaseResult)``, if given, is called as each case finishes."""
    results, to_launch = {}, []

    def add(path, result):
        results[path].results.append(result)
        if show is not None:
            show(path, result)
    for path in paths:
        found = probe(path)
        results[path] = Graded(not_implemented=found.not_implemented if found else [])
        for result in found.results if found else ():
            add(path, result)
        if found is None:
            to_launch.append(path)
    for n in sizes if to_launch else ():
        with tempfile.TemporaryDirectory() as errors_folder:
            proc = _launch(n, to_launch, errors_folder)
            running, hung, tail = _follow(proc, case_timeout, start_timeout,
                                          lambda index, result: add(to_launch[index], result))
            errors = _noted_errors(errors_folder, running)
        if running is not None or hung or proc.returncode != 0:
            stuck = running[0] if running else 0
            add(to_launch[stuck], _stopped(n, running, hung, proc, tail, errors, case_timeout))
            for later in to_launch[stuck + 1:]:
                add(later, CaseResult("ring", f"N={n}", "not run: the job was stopped during an "
                                      "earlier solution"))
    return results
