"""The `resnet-lab` command's start: `import resnet_lab` loads no torch, so a Ctrl-C while torch loads
(the first seconds of every command) ends in one line, like one later, and not in a traceback."""

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import resnet_lab

ROOT = Path(__file__).resolve().parents[1]

# A Ctrl-C that lands while torch imports, made without timing: an import hook raises it there.
INTERRUPT_TORCH = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
"""


# A SIGTERM (or Ctrl-C) that lands while torch imports, as a real signal sent by the process to itself
# there: its handler runs at the next bytecode, inside the import, with no timing involved.
SIGNAL_IN_TORCH = """
import os, signal, sys
class Signal:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), signal.{sig})
sys.meta_path.insert(0, Signal())
"""

# A signal during the interpreter's shutdown, after the command has returned and its output is out:
# an exit handler registered first runs last, after torch's own (QA: a Ctrl-C just after `evaluate`
# printed "Exception ignored in atexit callback ... torch/library.py ... KeyboardInterrupt").
SIGNAL_AT_EXIT = """
import atexit, os, signal
def late(): os.kill(os.getpid(), signal.{sig}); print("still here", flush=True)
atexit.register(late)
"""

# A signal while the command line is parsed (after torch loaded, before the command's own handlers).
SIGNAL_IN_PARSE = """
import os, signal
import resnet_lab.cli as cli
real = cli._parse
def parse(argv):
    os.kill(os.getpid(), signal.{sig})
    return real(argv)
cli._parse = parse
"""

LAUNCH = "from resnet_lab._launch import main; raise SystemExit(main())"


def _as_a_foreground_command() -> None:
    # A shell starts a background job (`make test &`) with SIGINT ignored, Python keeps it so, and the
    # Ctrl-C these tests send would do nothing: the child starts as one typed at a terminal does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, preexec_fn=_as_a_foreground_command)


def test_importing_the_package_loads_no_torch_and_every_public_name_loads_on_use():
    done = _run("import sys, resnet_lab; print('torch' in sys.modules, resnet_lab.__version__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", resnet_lab.__version__]
    for name in resnet_lab.__all__:
        assert getattr(resnet_lab, name) is not None and name in dir(resnet_lab)
    assert resnet_lab.create_model is sys.modules["resnet_lab.models"].create_model
    assert resnet_lab.train is sys.modules["resnet_lab.train"]
    done = _run("import resnet_lab; print(resnet_lab.transfer.finetune.__name__, resnet_lab.experiments.__name__)")
    assert done.stdout.split() == ["finetune", "resnet_lab.experiments"], done.stderr  # subpackages as before


def test_an_unknown_name_is_an_attribute_error_naming_it():
    try:
        resnet_lab.create_modle  # noqa: B018
    except AttributeError as e:
        assert "create_modle" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_a_ctrl_c_while_torch_loads_is_one_line_and_exit_130():
    done = _run(INTERRUPT_TORCH + "from resnet_lab._launch import main; raise SystemExit(main())")
    assert (done.returncode, done.stderr) == (130, "interrupted\n")
    # python -m resnet_lab goes through the same door
    done = _run(INTERRUPT_TORCH + "import runpy; runpy.run_module('resnet_lab', run_name='__main__')")
    assert (done.returncode, done.stderr) == (130, "interrupted\n")
    # the reference: the same interrupt through the CLI module itself is the traceback users saw
    done = _run(INTERRUPT_TORCH + "from resnet_lab.cli import main")
    assert done.returncode != 0 and "Traceback" in done.stderr and "KeyboardInterrupt" in done.stderr


@pytest.mark.parametrize("start", ["launcher", "python -m"])
def test_a_sigterm_while_torch_loads_is_interrupted_and_130_as_a_ctrl_c_is(start):
    """QA: SIGTERM in the first seconds killed the process silently (-15) where Ctrl-C said
    "interrupted" (130); the README says SIGTERM stops any command as Ctrl-C does."""
    run = LAUNCH if start == "launcher" else "import runpy; runpy.run_module('resnet_lab', run_name='__main__')"
    for sig in ("SIGTERM", "SIGINT"):
        done = _run(SIGNAL_IN_TORCH.format(sig=sig) + run, "models")
        assert (done.returncode, done.stderr) == (130, "interrupted\n"), (sig, done)
    # a torchrun rank stopped by torchrun says so, as it does later in a command
    done = _run(SIGNAL_IN_TORCH.format(sig="SIGTERM") + run, "models", env={"WORLD_SIZE": "2", "RANK": "1"})
    assert (done.returncode, done.stderr) == (130, "rank 1: stopped by torchrun (SIGTERM): another process failed "
                                                   "(its error says why) or the job was interrupted\n"), done


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_command_line_is_parsed_is_interrupted_and_130(sig):
    """Between torch's import and the command's own handlers: a SIGTERM killed the process silently,
    a Ctrl-C went up through the launcher as a traceback."""
    done = _run(SIGNAL_IN_PARSE.format(sig=sig) + LAUNCH, "models")
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", ""), done


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_command_finished_changes_nothing(sig):
    """The command's output, its exit status, and nothing else: the signal is ignored during the
    shutdown (the exit handler that sent it goes on to its end)."""
    done = _run(SIGNAL_AT_EXIT.format(sig=sig) + LAUNCH, "models", "resnet18")  # one model: the listing of 46 took 7 s
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "resnet18" in done.stdout and done.stdout.endswith("still here\n")
    # an interrupted command pressed again (users press Ctrl-C twice): still its one line and 130
    done = _run(INTERRUPT_TORCH + SIGNAL_AT_EXIT.format(sig=sig) + LAUNCH, "models")
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "still here\n"), done
    # a usage error's exit too
    done = _run(SIGNAL_AT_EXIT.format(sig=sig) + LAUNCH, "trian")
    assert done.returncode == 2 and "did you mean train?" in done.stderr and "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr and done.stdout == "still here\n"


def test_the_launcher_leaves_the_commands_own_handlers_in_charge():
    """Training and the CLI install their handlers on top of the launcher's and put it back after."""
    code = ("import signal, resnet_lab._launch as launch, resnet_lab.cli as cli\n"
            "seen = []\n"
            "def models(args): seen.append(signal.getsignal(signal.SIGTERM)); return 0\n"
            "cli.COMMANDS['models'] = models\n"
            "real = cli.main\n"
            "def main(argv=None): seen.append(signal.getsignal(signal.SIGTERM)); return real(argv)\n"
            "cli.main = main\n"
            "code = launch.main()\n"
            "print(seen[0] is launch._interrupt, seen[1] not in (launch._interrupt, signal.SIG_DFL), code,\n"
            "      signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)")
    done = _run(code, "models")
    assert done.stdout.split() == ["True", "True", "0", "True", "True"], done.stderr


@pytest.mark.parametrize("module, package", [("torch", "torch"), ("PIL", "pillow"), ("tqdm", "tqdm")])
def test_a_missing_dependency_is_one_line_naming_the_package_to_install(module, package):
    """QA 2026-12-06: a Python without torch ran the CLI into a ModuleNotFoundError traceback."""
    hide = f"import sys; sys.modules[{module!r}] = None\n"  # as if it were not installed
    done = _run(hide + "from resnet_lab._launch import main; raise SystemExit(main())")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr == (f"error: resnet-lab needs {module}, which this Python ({sys.executable}) cannot import: "
                           f"pip install {package} (or reinstall resnet-lab, which brings it)\n")


@pytest.mark.parametrize("module, package", [("PIL.Image", "pillow")])
def test_a_missing_part_of_an_installed_dependency_names_the_part_and_a_reinstall(module, package):
    """The review of 2026-12-06: a missing PIL.Image said PIL "cannot import" and to pip install pillow,
    which pip answers with "Requirement already satisfied"."""
    done = _run(f"import sys; sys.modules[{module!r}] = None\n"
                "from resnet_lab._launch import main; raise SystemExit(main())")
    assert done.returncode == 2 and done.stderr == (
        f"error: resnet-lab needs {module}, which this Python's {package} ({sys.executable}) lacks: pip install "
        f"--upgrade --force-reinstall {package}\n"), done.stderr


def test_the_installed_command_starts_at_the_launcher():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"resnet-lab": "resnet_lab._launch:main"}
    done = subprocess.run([sys.executable, "-m", "resnet_lab", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("resnet-lab ")


def test_a_missing_module_of_resnet_lab_itself_is_not_sent_to_pip():
    """A ModuleNotFoundError for one of the package's own modules is a broken checkout or install,
    not a dependency: the launcher must not answer "pip install resnet_lab" (another project's name
    on PyPI, and no cure); it lets the traceback name the module."""
    done = _run("import sys; sys.modules['resnet_lab.runs'] = None\n" + LAUNCH, "models")
    assert done.returncode == 1 and "pip install" not in done.stderr, done.stderr
    assert "ModuleNotFoundError" in done.stderr and "resnet_lab.runs" in done.stderr
