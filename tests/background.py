"""Test suites that run in a process of their own (the CUDA simulator's, the
other instruction sets'), started as soon as collection ends and run one at a
time beside the rest of the session; the test that owns one waits for its
outcome and judges it.

Such a suite is mostly single-threaded compilation and simulation: on two
cores it overlaps with the main session instead of adding to it. A test
selected without its job having been started (``result`` before the session
started it) runs it there and then.
"""
import dataclasses
import subprocess
import tempfile
import threading

import pytest

_DECLARED = {}  # key -> Job
_QUEUE = []
_LOCK = threading.Lock()


@dataclasses.dataclass
class Job:
    argv: list
    env: dict
    cwd: str
    timeout: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: bool = False
    process: object = None
    outcome: object = None

    def run(self):
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=err,
                                                text=True)
                returncode = self.process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                returncode = None
            out.seek(0)
            err.seek(0)
            self.outcome = subprocess.CompletedProcess(self.argv, returncode, out.read(), err.read())
        self.done.set()


def declare(key, argv, env, cwd, timeout):
    """Make the job ``key`` known, for a test marked ``background(key)``."""
    _DECLARED.setdefault(key, Job(list(argv), dict(env), str(cwd), timeout))


def start(keys):
    """Run the jobs ``keys`` one after another in a thread of this process."""
    jobs = [_DECLARED[key] for key in keys if key in _DECLARED and not _DECLARED[key].started]
    for job in jobs:
        job.started = True
    if not jobs:
        return

    def work():
        for job in jobs:
            job.run()
    threading.Thread(target=work, daemon=True, name="background suites").start()
    _QUEUE.extend(jobs)


def result(key):
    """The job's CompletedProcess (returncode None: it ran past its timeout),
    waiting for it; run here if the session did not start it."""
    job = _DECLARED[key]
    with _LOCK:
        if not job.started:
            job.started = True
            job.run()
    job.done.wait()
    return job.outcome


def stop():
    """End the jobs still running when the session ends early."""
    for job in _QUEUE:
        if job.process is not None and job.process.poll() is None:
            job.process.kill()


def keys_of(items):
    """The jobs the selected test items own (marker ``background``), in their order."""
    return [marker.args[0] for item in items for marker in item.iter_markers("background")]


mark = pytest.mark.background
