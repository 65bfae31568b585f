"""Train Style2Talker's Style-E expression diffusion (x0 MSE on expression windows).

    python train/style_e.py --config train_style_e_tiny --steps 100 --workdir outputs/train/style_e
    python train/style_e.py --config train_style_e_paper text.checkpoint=ckpt/clip_vit_b32 data.record_dir=/data/mead

Dotted overrides after the options change any config key (see jaxtalk/training/config.py: TrainStyleEConfig).
"""

from __future__ import annotations

import sys

from jaxtalk.training import loop
from jaxtalk.training.style_e import StyleETask


def main(argv: list[str] | None = None) -> loop.TrainResult:
    return loop.main(argv, "train_style_e", StyleETask.from_config, __doc__.splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
