"""Train SVP's dual-branch style extractor contrastively (InfoNCE, modality dropout).

    python train/style_prior.py --config train_style_prior_tiny --steps 100 --workdir outputs/train/style_prior
    python train/style_prior.py --config train_style_prior_paper data.record_dir=/data/mead

Dotted overrides after the options change any config key (see jaxtalk/training/config.py: TrainStylePriorConfig).
"""

from __future__ import annotations

import sys

from jaxtalk.training import loop
from jaxtalk.training.style_prior import StylePriorTask


def main(argv: list[str] | None = None) -> loop.TrainResult:
    return loop.main(argv, "train_style_prior", StylePriorTask.from_config, __doc__.splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
