"""Suite-wide settings.

`make test` runs pytest with two workers on a two-core machine; one torch thread per worker
avoids oversubscription (small forward passes lose more to thread contention than they gain).
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("RESNET_LAB_TEST_THREADS", "1")))
