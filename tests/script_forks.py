"""Runs one absl script many times, each run in a fresh forked process, without
paying Python's and JAX's start-up for each (test_script_and_store.py's
bad-input cases: ~3 s of imports each on a 2-core machine, against a few
milliseconds of work).

Usage: ``script_forks.py SCRIPT``, then one JSON request per line on stdin,
``{"argv": [...], "cwd": "..."}``; each is answered with one JSON line
``{"returncode": ..., "stdout": ..., "stderr": ...}``.

The script's module is loaded once (its flags defined, its ``main`` not
run). Each request forks: the child changes to ``cwd`` and runs
``app.run(main, argv=[SCRIPT, *argv])`` with its output in files, so every
run starts from unparsed flags and untouched module state, as
``python SCRIPT ARGS...`` would. Nothing of JAX has started before a fork
(importing it starts no backend and no thread). One difference: ``--help``
lists the script's flags under another module name, so help output is not
tested this way.
"""

import importlib.util
import json
import os
import sys
import tempfile
import traceback

from absl import app


def _child(script: str, module, request: dict, out, err) -> None:
  """The forked child: never returns."""
  code = 1
  try:
    os.chdir(request["cwd"])
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.argv = [script, *request["argv"]]
    sys.modules["__main__"] = module  # absl's help reads its docstring
    app.run(module.main, argv=sys.argv)
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
  script = sys.argv[1]
  spec = importlib.util.spec_from_file_location("script_under_test", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for line in sys.stdin:
    request = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
      sys.stdout.flush()
      pid = os.fork()
      if pid == 0:
        _child(script, module, request, out, err)
      _, status = os.waitpid(pid, 0)
      out.seek(0)
      err.seek(0)
      reply = {"returncode": os.waitstatus_to_exitcode(status),
               "stdout": out.read().decode(errors="replace"),
               "stderr": err.read().decode(errors="replace")}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  main()
