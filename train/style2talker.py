"""Train every Style2Talker component from nothing on synthetic clips of the training identities.

    python train/style2talker.py --config train_style2talker_synthetic --workdir outputs/train/style2talker
    python train/style2talker.py --config train_style2talker_tiny --workdir /tmp/s2t style_a.steps=4

Rerunning the same command resumes (orbax checkpoints per stage). See jaxtalk/training/style2talker.py.
"""

from __future__ import annotations

import sys

from jaxtalk.training.style2talker import main

if __name__ == "__main__":
    main(sys.argv[1:])
