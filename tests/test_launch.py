"""The `resnet-lab` command's start: `import resnet_lab` loads no torch, so a Ctrl-C while torch loads
(the first seconds of every command) ends in one line, like one later, and not in a traceback."""

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


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


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
