"""What runs inside the sandbox: the source of this file is given to ``python -I -S -c``, with a
JSON request on stdin, and it prints one JSON document on stdout. Standard library only.

Four modes, so that a candidate program never shares a process with the expected outputs:

- ``record`` (trusted: the problem's tests with its reference solution, or a stand-in): the
  arguments of every call the tests make, encoded as plain data;
- ``run`` (the candidate): its return value for each recorded call, encoded as plain data, or the
  exception it raised; nothing else reaches it;
- ``stdio`` (the candidate, a script): what it prints for each case's input;
- ``check`` (trusted, no candidate code): the problem's tests replayed against the candidate's
  returned values, decoded from plain data, so the tests' own asserts (tolerances included) judge.

Values cross as "plain data": JSON of exact built-in types (``type(x) is int``, not a subclass),
with tuples, sets, dicts with any keys, bytes and non-finite floats tagged. An object that is not
plain data (one equal to everything, say) cannot be encoded, and its case fails.
"""
import json
import math
import sys

MAX_DEPTH = 64


class NotPlainData(TypeError):
    pass


def encode(x, depth=0):
    """A JSON-able form of a plain value: only exact built-in types, anything else refused."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested deeper than %d" % MAX_DEPTH)
    t = type(x)
    if x is None or t is bool or t is int or t is str:
        return x
    if t is float:
        return x if math.isfinite(x) else {"$float": repr(x)}
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {"$tuple": [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is set or t is frozenset:
        items = [encode(v, depth + 1) for v in x]
        items.sort(key=lambda e: json.dumps(e, sort_keys=True))
        return {("$set" if t is set else "$frozenset"): items}
    if t is bytes:
        return {"$bytes": x.hex()}
    if t is complex:
        return {"$complex": [encode(x.real), encode(x.imag)]}
    raise NotPlainData("a %s is not plain data" % t.__name__)


def decode(e, depth=0):
    """The value an ``encode`` form stands for; anything malformed is refused."""
    if depth > MAX_DEPTH + 1:
        raise NotPlainData("nested too deep")
    t = type(e)
    if e is None or t in (bool, int, str, float):
        return e
    if t is list:
        return [decode(v, depth + 1) for v in e]
    if t is dict and len(e) == 1:
        (tag, v), = e.items()
        if tag == "$float" and v in ("nan", "inf", "-inf"):
            return float(v)
        if tag == "$tuple" and type(v) is list:
            return tuple(decode(i, depth + 1) for i in v)
        if tag == "$dict" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
            return {decode(k, depth + 1): decode(val, depth + 1) for k, val in v}
        if tag in ("$set", "$frozenset") and type(v) is list:
            s = [decode(i, depth + 1) for i in v]
            return set(s) if tag == "$set" else frozenset(s)
        if tag == "$bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "$complex" and type(v) is list and len(v) == 2:
            return complex(decode(v[0]), decode(v[1]))
    raise NotPlainData("not an encoded plain value: %r" % (e,))


def _line(e):
    return (type(e).__name__ + ": " + str(e)).strip()[:500]


class CandidateError(Exception):
    """Raised in ``check`` where the candidate raised on that call."""


class Stop(Exception):
    pass


def _stand_in():
    """Returns, in ``record`` without a reference solution, a value that lets the tests go on."""
    class Anything:
        def __eq__(self, other):
            return True
        __hash__ = object.__hash__
        def __repr__(self):
            return "<anything>"
    return Anything()


def _callable_names(entry_point, fn, call):
    """The name the tests call the candidate by: the entry point, or ``Solution().<entry>``."""
    if call == "method":
        return {"Solution": type("Solution", (), {entry_point: staticmethod(fn)})}
    return {entry_point: fn}


def _context(req):
    """The namespace the tests run in: the problem's own code (a HumanEval prompt defines helpers
    such as ``poly`` that its tests call), then the tests."""
    env = {"__name__": "__main__"}
    if req.get("context"):
        exec(compile(req["context"], "<problem>", "exec"), env)
    return env


def _run_tests(req, fn):
    """The problem's tests, with ``fn`` where they call the program, random seeded the same way
    in ``record`` and ``check`` (tests that draw inputs must draw the same ones)."""
    import random

    env = _context(req)
    env.update(_callable_names(req["entry_point"], fn, req.get("call", "function")))
    random.seed(0)
    exec(compile(req["tests"], "<tests>", "exec"), env)


def _record(req):
    calls = []
    reference = req.get("reference")
    target = None
    if reference:
        env = {"__name__": "__reference__"}
        exec(compile(reference, "<reference>", "exec"), env)
        target = env.get(req["entry_point"])
        if target is None and "Solution" in env:
            target = getattr(env["Solution"](), req["entry_point"])

    def recorder(*args, **kwargs):
        calls.append({"args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        return target(*args, **kwargs) if target is not None else _stand_in()

    _run_tests(req, recorder)
    return {"status": "ok", "calls": calls}


def _run(req):
    try:
        code = compile(req["program"], "<program>", "exec")
    except (SyntaxError, ValueError) as e:
        return {"status": "syntax_error", "detail": _line(e)}
    env = {"__name__": "__candidate__"}
    try:
        exec(code, env)
    except SystemExit as e:
        return {"status": "exit_before_tests", "detail": "SystemExit(%r) while defining the program" % (e.code,)}
    except MemoryError:
        return {"status": "memory", "detail": "MemoryError"}
    except AssertionError as e:
        return {"status": "assertion", "detail": "the program's own assert failed: " + _line(e)}
    except BaseException as e:
        return {"status": "exception", "detail": "while defining the program: " + _line(e)}
    name = req["entry_point"]
    fn = env.get(name)
    if req.get("call") == "method":
        try:
            fn = getattr(env["Solution"](), name)
        except BaseException as e:
            return {"status": "exception", "detail": "Solution()." + name + ": " + _line(e)}
    if not callable(fn):
        return {"status": "exception", "detail": "NameError: the program defines no %r" % name}
    results = []
    for c in req["calls"]:
        try:
            value = fn(*decode(c["args"]), **decode(c["kwargs"]))
            results.append({"value": encode(value)})
        except MemoryError:
            return {"status": "memory", "detail": "MemoryError"}
        except SystemExit as e:
            results.append({"error": "SystemExit(%r)" % (e.code,)})
        except BaseException as e:
            results.append({"error": _line(e)})
    return {"status": "ok", "results": results}


def _stdio(req):
    import io
    try:
        code = compile(req["program"], "<program>", "exec")
    except (SyntaxError, ValueError) as e:
        return {"status": "syntax_error", "detail": _line(e)}
    printed = []
    for c in req["inputs"]:
        sys.stdin = io.TextIOWrapper(io.BytesIO(c.encode()))
        out = io.StringIO()
        saved, sys.stdout = sys.stdout, out
        error = None
        try:
            exec(code, {"__name__": "__main__"})
        except SystemExit as e:
            if e.code not in (None, 0):
                error = "SystemExit(%r)" % (e.code,)
        except MemoryError:
            return {"status": "memory", "detail": "MemoryError"}
        except BaseException as e:
            error = _line(e)
        finally:
            sys.stdout = saved
        text = out.getvalue()
        if type(text) is not str:
            error = "printed something that is not text"
            text = ""
        printed.append({"printed": text[:100000], "error": error})
    return {"status": "ok", "results": printed}


def _check(req):
    calls, results = req["calls"], req["results"]
    queues = {}  # the program's answers per distinct call, in the order they were recorded
    for c, r in zip(calls, results):
        queues.setdefault(json.dumps([c["args"], c["kwargs"]], sort_keys=True), []).append(r)
    used = {}

    def replay(*args, **kwargs):
        key = json.dumps([encode(list(args)), encode(dict(kwargs))], sort_keys=True)
        if key not in queues:
            raise Stop("the tests called the program with arguments the recording does not have")
        n = used.get(key, 0)
        used[key] = n + 1
        r = queues[key][min(n, len(queues[key]) - 1)]  # a call repeated (in an assert's message, say)
        if "error" in r:
            raise CandidateError("%s%r raised %s" % (req["entry_point"], tuple(args), r["error"]))
        return decode(r["value"])

    try:
        _run_tests(req, replay)
    except Stop as e:
        return {"status": "checker_error", "detail": str(e)}
    except AssertionError as e:
        return {"status": "assertion", "detail": ("AssertionError: " + str(e)).strip()[:500]}
    except CandidateError as e:
        return {"status": "exception", "detail": str(e)[:500]}
    except NotPlainData as e:
        return {"status": "exception", "detail": "returned " + str(e)}
    except BaseException as e:
        return {"status": "exception", "detail": _line(e)}
    if sum(used.values()) < len(calls):
        return {"status": "checker_error", "detail": "the tests made fewer calls than the recording"}
    return {"status": "pass", "detail": ""}


MODES = {"record": _record, "run": _run, "stdio": _stdio, "check": _check}
#: Audit events a graded program has no business raising. The operating system refuses them
#: (no processes, no network, nothing of the host to reach); this hook only names the attempt, so
#: the verdict says "forbidden" rather than a bare exception. It is a label, not the wall.
FORBIDDEN = ("subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
             "pty.", "socket.", "ctypes.", "os.kill", "os.killpg", "os.unshare", "os.setns", "os.chroot",
             "resource.setrlimit", "resource.prlimit", "sys.addaudithook")


def main():
    import resource
    req = json.loads(sys.stdin.read())
    sys.stdin.close()
    mb = 1024 * 1024
    for which, value in ((resource.RLIMIT_CPU, req["cpu_s"]), (resource.RLIMIT_AS, req["memory_mb"] * mb),
                         (resource.RLIMIT_FSIZE, req["file_mb"] * mb), (resource.RLIMIT_NOFILE, req["nofile"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))
    out = sys.stdout
    sys.stdout = sys.stderr  # what the program prints is not the answer
    attempts = []
    if req["mode"] in ("run", "stdio"):
        def hook(event, args):
            if event.startswith(FORBIDDEN) and len(attempts) < 5:
                attempts.append(event)
        sys.addaudithook(hook)
    try:
        answer = MODES[req["mode"]](req)
    except MemoryError:
        answer = {"status": "memory", "detail": "MemoryError"}
    except NotPlainData as e:
        answer = {"status": "exception", "detail": "returned " + str(e)}
    except BaseException as e:
        answer = {"status": "exception", "detail": _line(e)}
    if attempts:
        answer = dict(answer, status="forbidden", detail="tried " + ", ".join(sorted(set(attempts))))
    try:
        text = json.dumps(answer)
    except BaseException as e:
        text = json.dumps({"status": "exception", "detail": "unencodable answer: " + _line(e)})
    out.write(text)
    out.flush()


if __name__ == "__main__":
    main()
