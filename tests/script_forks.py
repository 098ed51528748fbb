"""Runs one absl script, or one piece of Python code, many times, each run a
fresh forked process, without paying Python's and JAX's start-up for each
(~3 s of imports on a 2-core machine: more than most test runs' own work).
Driven by :class:`conftest.ForkServer`.

Usage: ``script_forks.py SCRIPT`` or ``script_forks.py -c CODE``, then one
JSON request per line on stdin, ``{"argv": [...], "cwd": "...", "env":
{...}, "timeout": seconds}``; each is answered with one JSON line
``{"returncode": ..., "stdout": ..., "stderr": ...}``.

The script's module (or, for code, ``rnnsweep``) is imported once: the
script's flags are defined, its ``main`` is not run. Each request forks: the
child sets ``env``, changes to ``cwd`` and runs ``app.run(main, argv=[SCRIPT,
*argv])`` (or the code with ``sys.argv == ["-c", *argv]``) with its output
in files, so every run starts from unparsed flags and untouched module
state, as ``python SCRIPT ARGS...`` would; it can be killed (``kill -9``
points), and one running past ``timeout`` is ended by SIGALRM. Nothing of
JAX has started before a fork (importing it starts no backend). One
difference from a new process: ``--help`` lists a script's flags under
another module name, so help output is not tested this way.
"""

import importlib.util
import json
import os
import signal
import sys
import tempfile
import traceback

from absl import app


def _load(target: list[str]):
  """What each child runs: ``run(argv)``."""
  if target[0] == "-c":
    code = compile(target[1], "<string>", "exec")
    import rnnsweep  # pylint: disable=import-outside-toplevel,unused-import

    def run(argv):
      sys.argv = ["-c", *argv]
      exec(code, {"__name__": "__main__"})  # pylint: disable=exec-used

    return run
  script = target[0]
  spec = importlib.util.spec_from_file_location("script_under_test", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)

  def run(argv):
    sys.argv = [script, *argv]
    sys.modules["__main__"] = module  # absl's help reads its docstring
    app.run(module.main, argv=sys.argv)

  return run


def _child(run, request: dict, out, err) -> None:
  """The forked child: never returns."""
  code = 1
  try:
    signal.alarm(int(request.get("timeout") or 0))
    os.environ.update(request.get("env") or {})
    os.chdir(request["cwd"])
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    run(request["argv"])
    code = 0
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      code = e.code or 0
    else:  # sys.exit("message"): Python prints it and exits 1
      print(e.code, file=sys.stderr)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def main() -> None:
  run = _load(sys.argv[1:])
  for line in sys.stdin:
    request = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
      sys.stdout.flush()
      pid = os.fork()
      if pid == 0:
        _child(run, request, out, err)
      _, status = os.waitpid(pid, 0)
      out.seek(0)
      err.seek(0)
      reply = {"returncode": os.waitstatus_to_exitcode(status),
               "stdout": out.read().decode(errors="replace"),
               "stderr": err.read().decode(errors="replace")}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  main()
