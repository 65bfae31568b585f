"""Train (or fine-tune) the SVP stack's latent autoencoder on frames of the clip records.

    python train/vae.py --config train_svp_synth_vae --workdir outputs/svp_stack/vae
    python train/vae.py --config train_svp_synth_vae_expression data.record_dir=STACK/data/train_multi \
        'init=[{kind: run, path: STACK/vae, component: vae}, {kind: run, path: PROBE, component: expression_probe}]'

`train/svp_stack.py` runs the first as part of the stack (and writes the latent scale); the second fine-tunes the
decoder alone with the expression-probe term. Dotted overrides after the options change any config key
(jaxtalk/training/config.py: TrainVAEConfig).
"""

from __future__ import annotations

import sys

from jaxtalk.training import loop
from jaxtalk.training.vae import VAETask


def main(argv: list[str] | None = None) -> loop.TrainResult:
    return loop.main(argv, "train_vae", VAETask.from_config, __doc__.splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
