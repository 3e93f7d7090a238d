"""`python -m resnet_lab ...` (and `torchrun -m resnet_lab train ...`) run the CLI."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
