"""Suite-wide settings.

`make test` runs pytest with two workers on a two-core machine; one torch thread per worker
avoids oversubscription (small forward passes lose more to thread contention than they gain).

Helpers that tests in several folders share live in plain modules next to this file, imported by
name (``tests/`` is on the path): ``support.py`` (``randomize_bn``) and ``tinytrain.py``. Not here:
under ``--import-mode=importlib`` ``from conftest import ...`` would be ambiguous between the
conftest.py files of the suite.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("RESNET_LAB_TEST_THREADS", "1")))
