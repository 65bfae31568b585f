"""Train the whole synthetic-domain SVP stack from nothing (VAE, style priors, stages 1-3; resumable).

    python train/svp_stack.py --root outputs/svp_stack            # ~3.5 h on 2 idle CPU cores
    python train/svp_stack.py --root /tmp/stack --scale 0.002     # a smoke run
"""

from __future__ import annotations

import sys

from jaxtalk.training.svp_stack import main

if __name__ == "__main__":
    main(sys.argv[1:])
