"""Evaluation helpers shared by the fidelity benches (`bench/fidelity_svp.py`, `bench/fidelity_style2talker.py`).

- `jaxtalk.eval.metrics`: PSNR, SSIM, F-LMD / M-LMD, mouth opening, lip-sync, audio-visual sync, mouth-coefficient
  correlation, emotion accuracy, StyleSim, d_cls, identity similarity / leakage (numpy, no weights).
- `jaxtalk.eval.models`: the evaluator nets (frame -> expression + 16 landmarks; expression window -> emotion;
  frame -> identity embedding), and `prepare_frames` (any square size -> 64 px).
- `jaxtalk.eval.evaluators`: `load_evaluators()` -> `Evaluators` with the shipped weights (`regress`, `analyse`,
  `identity_embedding`, `emotion_probs`, `predict_emotion`, `style_code`, `frame_metrics`).
- `jaxtalk.eval.data`: ground truth for synthetic clips (`clip_landmarks`) and the evaluators' training seeds
  (`TRAIN_SEED`: benches must evaluate on other seeds).
- `python -m jaxtalk.eval.train --out jaxtalk/eval/weights`: retrain every evaluator net from nothing.
"""

from jaxtalk.eval.evaluators import Evaluators, load_evaluators

__all__ = ["Evaluators", "load_evaluators"]
