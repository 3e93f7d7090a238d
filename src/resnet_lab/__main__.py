"""`python -m resnet_lab ...` (and `torchrun -m resnet_lab train ...`) run the CLI."""

import os
import sys

from ._launch import main  # a Ctrl-C while torch loads is one line too

if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun rank has said all it has to say (checkpoints are written atomically, the
        # process group is left): end here. Tearing down the interpreter would run the C++
        # destructors of gloo's threads, which now and then abort a finished rank ("terminate called
        # without an active exception", exit -6 instead of 0 or 2: seen under load, after a lost peer
        # and after a --stop-after pause), and torchrun then stops the other ranks.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
