"""Train one stage of SVP (stage 1 single frames, 2 motion + audio, 3 style attention).

    python train/svp.py --config train_svp_stage1_tiny --steps 100 --workdir outputs/train/s1
    python train/svp.py --config train_svp_stage2_paper data.record_dir=/data/mead \
        'init=[{kind: run, path: outputs/train/s1}, {kind: animatediff_motion_module, component: unet, path: mm_sd_v15_v2.ckpt}]'

Dotted overrides after the options change any config key (see jaxtalk/training/config.py: TrainSVPConfig).
"""

from __future__ import annotations

import sys

from jaxtalk.training import loop
from jaxtalk.training.svp import SVPTask


def main(argv: list[str] | None = None) -> loop.TrainResult:
    return loop.main(argv, "train_svp", SVPTask.from_config, __doc__.splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
