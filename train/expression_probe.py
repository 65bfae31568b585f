"""Fit the expression probe to the true expression coefficients of real training frames.

    python train/expression_probe.py --config train_svp_synth_probe --workdir outputs/svp_stack/expression_probe

Its run is the `expression_probe` init source of SVP stage 3 with `expression_loss` (see train_svp_synth_stage3).
Dotted overrides after the options change any config key (jaxtalk/training/config.py: TrainExpressionProbeConfig).
"""

from __future__ import annotations

import sys

from jaxtalk.training import loop
from jaxtalk.training.probes import ExpressionProbeTask


def main(argv: list[str] | None = None) -> loop.TrainResult:
    return loop.main(argv, "train_expression_probe", ExpressionProbeTask.from_config, __doc__.splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
