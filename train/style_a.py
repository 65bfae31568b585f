"""Train Style2Talker's Style-A (flow-warped VToonify-D + pSp + motion generator + refinement + art styles).

    python train/style_a.py --config train_style_a_tiny --steps 20 --workdir outputs/train/style_a

Dotted overrides after the options change any config key (jaxtalk/training/style2talker_config.py:
TrainStyleAConfig). Rerunning resumes from the newest checkpoint in the workdir.
"""

from __future__ import annotations

import sys

from jaxtalk.training import loop
from jaxtalk.training.style_a import StyleATask


def main(argv: list[str] | None = None) -> loop.TrainResult:
    return loop.main(argv, "train_style_a", StyleATask.from_config, __doc__.splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
