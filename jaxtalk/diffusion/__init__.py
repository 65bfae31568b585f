"""Diffusion maths shared by SVP (SD1.5 / V-Express latent video diffusion) and Style-E (AGRoL MLP diffusion).

- `schedules`: β schedules, zero-terminal-SNR rescale, `ScheduleConfig` → `NoiseSchedule`.
- `training`: forward noising, ε / v / x_0 targets, offset noise, SNR and min-SNR-γ weights, the weighted MSE.
- samplers, each as `*_setup` (static per-step coefficients, host side) + pure `*_step(coeffs, n, x, out, ...)`
  (jit / `lax.scan` safe) + `*_sample(denoise_fn, x_T, coeffs, ...)` (one `lax.scan`):
  `ddim` (diffusers DDIMScheduler), `euler` (diffusers EulerDiscreteScheduler),
  `respaced` (improved-diffusion SpacedDiffusion + p_sample_loop: Style-E's "ddim5"),
  `multistep` (DPM-Solver++ 2M / SDE and UniPC: diffusers' DPMSolverMultistep / UniPCMultistep schedulers; these
  carry a `MultistepState`, so their step is `multistep_step(coeffs, n, state, out, noise)`).
Step index n counts sampling steps from the noisiest (n = 0) to the last (n = N − 1) for every sampler.
"""

from jaxtalk.diffusion.ddim import (
    TIMESTEP_SPACINGS,
    DDIMCoefficients,
    ddim_sample,
    ddim_setup,
    ddim_step,
    inference_timesteps,
    predict_x0_eps,
)
from jaxtalk.diffusion.euler import (
    EulerCoefficients,
    euler_sample,
    euler_scale_model_input,
    euler_setup,
    euler_step,
    euler_timesteps,
)
from jaxtalk.diffusion.loop import DenoiseFn, scan_sampler
from jaxtalk.diffusion.multistep import (
    MultistepCoefficients,
    MultistepState,
    dpm_solver_setup,
    multistep_init,
    multistep_sample,
    multistep_step,
    multistep_timesteps,
    unipc_setup,
)
from jaxtalk.diffusion.respaced import (
    RespacedCoefficients,
    respaced_predict_x0,
    respaced_sample,
    respaced_setup,
    respaced_step,
    respaced_tables,
    space_timesteps,
)
from jaxtalk.diffusion.schedules import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    NoiseSchedule,
    ScheduleConfig,
    alphas_cumprod_of,
    betas_for_alpha_bar,
    cosine_alpha_bar,
    make_betas,
    rescale_zero_terminal_snr,
)
from jaxtalk.diffusion.training import (
    add_noise,
    apply_noise_offset,
    diffusion_loss,
    min_snr_weights,
    sample_timesteps,
    snr,
    training_target,
    velocity,
)

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "DDIMCoefficients",
    "DenoiseFn",
    "EulerCoefficients",
    "MultistepCoefficients",
    "MultistepState",
    "NoiseSchedule",
    "RespacedCoefficients",
    "ScheduleConfig",
    "add_noise",
    "alphas_cumprod_of",
    "apply_noise_offset",
    "betas_for_alpha_bar",
    "cosine_alpha_bar",
    "ddim_sample",
    "ddim_setup",
    "ddim_step",
    "diffusion_loss",
    "dpm_solver_setup",
    "euler_sample",
    "euler_scale_model_input",
    "euler_setup",
    "euler_step",
    "euler_timesteps",
    "inference_timesteps",
    "make_betas",
    "min_snr_weights",
    "multistep_init",
    "multistep_sample",
    "multistep_step",
    "multistep_timesteps",
    "predict_x0_eps",
    "rescale_zero_terminal_snr",
    "respaced_predict_x0",
    "respaced_sample",
    "respaced_setup",
    "respaced_step",
    "respaced_tables",
    "sample_timesteps",
    "scan_sampler",
    "snr",
    "space_timesteps",
    "training_target",
    "unipc_setup",
    "velocity",
]
