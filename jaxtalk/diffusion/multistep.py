"""Multistep exponential-integrator samplers: DPM-Solver++ (Lu et al. 2022; 1S / 2M, ODE and SDE) and UniPC
(Zhao et al. 2023; UniP-B(h) predictor + UniC corrector), matching diffusers' `DPMSolverMultistepScheduler` and
`UniPCMultistepScheduler` (data prediction, no Karras / exponential / beta sigmas, no thresholding).

Both solve the diffusion ODE in λ = log(α/σ) with the network turned into a data prediction
m_n = x̂_0(x_n, t_n) (ε: (x − σ ε̂)/α, v: α x − σ v̂, sample: the output), where at sampler noise level s
(diffusers' σ = √((1−ᾱ)/ᾱ)) α = 1/√(s²+1) and σ = s·α. Every update is LINEAR in the current sample and the last
few data predictions with per-step scalar coefficients, so setup (host side, float64) reduces each solver to two
tables and the step (jit / `lax.scan` safe) to

  m_n  = x̂_0(model output at x_n)
  x̄_n  = kx·x̄_{n−1} + k0·m_n + k1·m_{n−1} + k2·m_{n−2}   where the corrector runs (UniPC, n ≥ 1), else x_n
  x_{n+1} = px·x̄_n + p0·m_n + p1·m_{n−1} + pz·z_n          (z_n ~ N(0, I) for SDE-DPM-Solver++ only)

Setup details (as diffusers): timesteps are integers, linspace → round(linspace(0, T−1, N+1))[::-1][:N],
leading → n·⌊T/(N+1)⌋ (+ steps_offset), trailing → round(T − n·T/N) − 1; s_n = σ(t_n) on the training grid,
s_N = 0 ("zero") or σ(0) ("sigma_min"); a zero-terminal-SNR schedule gets ᾱ_{T−1} = 2⁻²⁴ so s stays finite.
x_T = z (init_noise_sigma = 1, no input scaling). With s_N = 0 (or N < 15 and lower_order_final) the last step is
first order, which makes x_N = m_{N−1} exactly.

DPM-Solver++ at step n, h = λ_{n+1} − λ_n, r = (λ_n − λ_{n−1})/h, D1 = (m_n − m_{n−1})/r:
  ODE: x' = (σ'/σ) x − α'(e^{−h} − 1) (m_n + ½ D1)            (midpoint; heun: … + α'((e^{−h}−1)/h + 1) D1)
  SDE: x' = (σ'/σ) e^{−h} x + α'(1 − e^{−2h}) (m_n + ½ D1) + σ' √(1 − e^{−2h}) z
  first order (n = 0, the final step): D1 = 0.
UniPC (bh1: B(h) = −h, bh2: B(h) = e^{−h} − 1; φ-coefficients b_i and ρ from the R·ρ = b system of the paper):
  UniP order 2: x' = (σ'/σ) x̄ − α'(e^{−h} − 1) m_n − α' B(h) ½ (m_{n−1} − m_n)/r
  UniC at n uses the predictor order of step n − 1, the new m_n and the stored m_{n−1}, m_{n−2}, x̄_{n−1}.
Note the UniPC data prediction m_n is taken from the UNCORRECTED x_n, as diffusers does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtalk.diffusion.loop import DenoiseFn, step_noises
from jaxtalk.diffusion.schedules import PREDICTION_TYPES, NoiseSchedule, ScheduleConfig, schedule_from

DPM_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")
DPM_SOLVER_TYPES = ("midpoint", "heun")
UNIPC_SOLVER_TYPES = ("bh1", "bh2")
FINAL_SIGMAS = ("zero", "sigma_min")


def multistep_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
    """diffusers' integer DPM-Solver / UniPC timesteps for N steps, noisiest first (int64)."""
    T, N = int(num_train_timesteps), int(num_inference_steps)
    if not 1 <= N <= T:
        raise ValueError(f"num_inference_steps must be in [1, {T}], got {N}")
    if spacing == "linspace":
        return np.linspace(0, T - 1, N + 1).round()[::-1][:-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = T // (N + 1)
        return (np.arange(0, N + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + int(steps_offset)
    if spacing == "trailing":
        return np.arange(T, 0, -T / N).round().astype(np.int64) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is not one of ('linspace', 'leading', 'trailing')")


@struct.dataclass
class MultistepCoefficients:
    """Per-step tables in sampling order (n = 0 is the noisiest step); see the module docstring for the update."""

    timesteps: jax.Array  # int32 (N,): the timestep the model is called with
    alpha: jax.Array  # float32 (N,): α_n = 1/√(s_n² + 1)
    sigma: jax.Array  # float32 (N,): σ_n = s_n·α_n
    corrector: jax.Array  # float32 (N, 4): kx, k0, k1, k2
    use_corrector: jax.Array  # bool (N,)
    predictor: jax.Array  # float32 (N, 4): px, p0, p1, pz
    prediction_type: str = struct.field(pytree_node=False, default="epsilon")
    solver: str = struct.field(pytree_node=False, default="dpmsolver++")

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def stochastic(self) -> bool:
        return self.solver == "sde-dpmsolver++"

    @property
    def init_noise_sigma(self) -> float:
        return 1.0


def _levels(schedule: NoiseSchedule, num_inference_steps: int, timestep_spacing: str, steps_offset: int,
            final_sigmas_type: str, where: str):
    """(timesteps, s, α, σ, λ) with s, α, σ, λ of length N + 1 (float64 from diffusers' float32 s)."""
    if final_sigmas_type not in FINAL_SIGMAS:
        raise ValueError(f"{where}: final_sigmas_type {final_sigmas_type!r} is not one of {FINAL_SIGMAS}")
    T = schedule.num_train_timesteps
    abar = np.array(schedule.alphas_cumprod, np.float32)
    if schedule.config.rescale_zero_terminal_snr:
        abar[-1] = np.float32(2.0**-24)
    train_s = np.sqrt((np.float32(1) - abar) / abar)
    timesteps = multistep_timesteps(T, num_inference_steps, timestep_spacing, steps_offset)
    if timesteps.max() >= T or timesteps.min() < 0:
        raise ValueError(f"{where}: timesteps {timesteps.min()}..{timesteps.max()} fall outside [0, {T}); "
                         f"reduce steps_offset={steps_offset}")
    last = 0.0 if final_sigmas_type == "zero" else float(train_s[0])
    s = np.concatenate([train_s[timesteps], [last]]).astype(np.float32).astype(np.float64)
    alpha = 1.0 / np.sqrt(s**2 + 1.0)
    sigma = s * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # +inf where s = 0
    return timesteps, s, alpha, sigma, lam


def _pack(timesteps, alpha, sigma, corrector, use_corrector, predictor, kind, solver, where) -> MultistepCoefficients:
    for name, table in (("corrector", corrector), ("predictor", predictor)):
        if not np.all(np.isfinite(table)):
            raise ValueError(f"{where}: non-finite {name} coefficients; with final_sigmas_type='zero' keep "
                             "lower_order_final on")
    n = len(timesteps)
    return MultistepCoefficients(
        timesteps=jnp.asarray(timesteps, jnp.int32),
        alpha=jnp.asarray(alpha[:n], jnp.float32),
        sigma=jnp.asarray(sigma[:n], jnp.float32),
        corrector=jnp.asarray(corrector, jnp.float32),
        use_corrector=jnp.asarray(use_corrector, bool),
        predictor=jnp.asarray(predictor, jnp.float32),
        prediction_type=kind,
        solver=solver,
    )


def _prediction_type(schedule: NoiseSchedule, prediction_type: str | None, where: str) -> str:
    kind = prediction_type or schedule.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"{where}: prediction_type {kind!r} is not one of {PREDICTION_TYPES}")
    return kind


def dpm_solver_setup(
    schedule: NoiseSchedule | ScheduleConfig,
    num_inference_steps: int,
    *,
    algorithm_type: str = "dpmsolver++",
    solver_order: int = 2,
    solver_type: str = "midpoint",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    lower_order_final: bool = True,
    euler_at_final: bool = False,
    final_sigmas_type: str = "zero",
    prediction_type: str | None = None,
) -> MultistepCoefficients:
    """Static DPM-Solver++ coefficients (call outside jit): `algorithm_type` "dpmsolver++" (ODE, 2M by default)
    or "sde-dpmsolver++" (needs per-step noise); `solver_order` 1 or 2."""
    where = "dpm_solver_setup"
    schedule = schedule_from(schedule)
    kind = _prediction_type(schedule, prediction_type, where)
    if algorithm_type not in DPM_ALGORITHMS:
        raise ValueError(f"{where}: algorithm_type {algorithm_type!r} is not one of {DPM_ALGORITHMS}")
    if solver_type not in DPM_SOLVER_TYPES:
        raise ValueError(f"{where}: solver_type {solver_type!r} is not one of {DPM_SOLVER_TYPES}")
    if solver_order not in (1, 2):
        raise ValueError(f"{where}: solver_order must be 1 or 2 (3M is not built), got {solver_order}")
    timesteps, _, alpha, sigma, lam = _levels(schedule, num_inference_steps, timestep_spacing, steps_offset,
                                              final_sigmas_type, where)
    N = len(timesteps)
    sde = algorithm_type == "sde-dpmsolver++"
    predictor = np.zeros((N, 4))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for n in range(N):
            final_first = n == N - 1 and (euler_at_final or (lower_order_final and N < 15)
                                          or final_sigmas_type == "zero")
            first = solver_order == 1 or n == 0 or final_first
            a_t, s_t, s_0 = alpha[n + 1], sigma[n + 1], sigma[n]
            h = lam[n + 1] - lam[n]
            if sde:
                px = s_t / s_0 * np.exp(-h) if s_t > 0 else 0.0
                c = a_t * (1.0 - np.exp(-2.0 * h))
                pz = s_t * np.sqrt(1.0 - np.exp(-2.0 * h)) if s_t > 0 else 0.0
                heun = a_t * ((1.0 - np.exp(-2.0 * h)) / (-2.0 * h) + 1.0)
            else:
                px = s_t / s_0
                c = -a_t * (np.exp(-h) - 1.0)
                pz = 0.0
                heun = a_t * ((np.exp(-h) - 1.0) / h + 1.0)
            if first:
                predictor[n] = (px, c, 0.0, pz)
                continue
            r0 = (lam[n] - lam[n - 1]) / h
            d1 = 0.5 * c if solver_type == "midpoint" else heun
            # x' = px x + c m0 + d1 (m0 − m1)/r0
            predictor[n] = (px, c + d1 / r0, -d1 / r0, pz)
    corrector = np.zeros((N, 4))
    return _pack(timesteps, alpha, sigma, corrector, np.zeros(N, bool), predictor, kind, algorithm_type, where)


def _unipc_b(h: float, order: int, solver_type: str) -> tuple[float, float, list[float]]:
    """(hφ₁, B(h), [b_1 … b_order]) of UniPC's data-prediction update with hh = −h."""
    hh = -h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if solver_type == "bh1" else np.expm1(hh)
    b, factorial = [], 1
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, b


def unipc_setup(
    schedule: NoiseSchedule | ScheduleConfig,
    num_inference_steps: int,
    *,
    solver_order: int = 2,
    solver_type: str = "bh2",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    lower_order_final: bool = True,
    disable_corrector: Sequence[int] = (),
    final_sigmas_type: str = "zero",
    prediction_type: str | None = None,
) -> MultistepCoefficients:
    """Static UniPC coefficients (call outside jit): UniP-B(h) predictor with the UniC corrector (predict_x0),
    `solver_order` 1 or 2; the corrector is skipped after the steps listed in `disable_corrector`."""
    where = "unipc_setup"
    schedule = schedule_from(schedule)
    kind = _prediction_type(schedule, prediction_type, where)
    if solver_type not in UNIPC_SOLVER_TYPES:
        raise ValueError(f"{where}: solver_type {solver_type!r} is not one of {UNIPC_SOLVER_TYPES}")
    if solver_order not in (1, 2):
        raise ValueError(f"{where}: solver_order must be 1 or 2 (order 3 is not built), got {solver_order}")
    timesteps, _, alpha, sigma, lam = _levels(schedule, num_inference_steps, timestep_spacing, steps_offset,
                                              final_sigmas_type, where)
    N = len(timesteps)
    orders = []
    for n in range(N):
        order = min(solver_order, N - n) if lower_order_final else solver_order
        orders.append(min(order, min(n, solver_order) + 1))
    predictor = np.zeros((N, 4))
    corrector = np.zeros((N, 4))
    use_corrector = np.zeros(N, bool)
    disabled = {int(i) for i in disable_corrector}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for n in range(N):
            # UniP from level n to n + 1 with this step's order.
            p = orders[n]
            h = lam[n + 1] - lam[n]
            h_phi_1, b_h, _ = _unipc_b(h, p, solver_type)
            a_t = alpha[n + 1]
            px = sigma[n + 1] / sigma[n]
            p0, p1 = -a_t * h_phi_1, 0.0
            if p == 2:
                rk = (lam[n - 1] - lam[n]) / h
                w = a_t * b_h * 0.5 / rk  # − α' B(h) ½ (m1 − m0)/r
                p0, p1 = p0 + w, -w
            predictor[n] = (px, p0, p1, 0.0)
            # UniC at level n, correcting the step from n − 1 with the order that step used.
            if n == 0 or (n - 1) in disabled:
                continue
            use_corrector[n] = True
            c = orders[n - 1]
            h = lam[n] - lam[n - 1]
            h_phi_1, b_h, b = _unipc_b(h, c, solver_type)
            a_t = alpha[n]
            kx = sigma[n] / sigma[n - 1]
            if c == 1:
                rho = [0.5]
                k2 = 0.0
                k1 = -a_t * h_phi_1
            else:
                rk = (lam[n - 2] - lam[n - 1]) / h
                rho = np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), np.array(b))
                w = a_t * b_h * rho[0] / rk  # − α B(h) ρ₀ (m2 − m1)/r
                k2 = -w
                k1 = -a_t * h_phi_1 + w
            last = a_t * b_h * rho[-1]  # − α B(h) ρ_last (m0 − m1)
            corrector[n] = (kx, -last, k1 + last, k2)
    return _pack(timesteps, alpha, sigma, corrector, use_corrector, predictor, kind, "unipc", where)


@struct.dataclass
class MultistepState:
    """What a multistep sampler carries between steps: the sample, the corrected previous sample and the last two
    data predictions (zeros before they exist)."""

    x: jax.Array
    last: jax.Array
    m1: jax.Array
    m2: jax.Array


def multistep_init(x_T: jax.Array) -> MultistepState:
    zeros = jnp.zeros(x_T.shape, jnp.float32)
    return MultistepState(x=x_T, last=zeros, m1=zeros, m2=zeros)


def data_prediction(coeffs: MultistepCoefficients, n: jax.Array | int, x: jax.Array, model_output: jax.Array
                    ) -> jax.Array:
    """x̂_0 at step n from the model output (float32)."""
    a, s = coeffs.alpha[n], coeffs.sigma[n]
    x, out = x.astype(jnp.float32), model_output.astype(jnp.float32)
    if coeffs.prediction_type == "epsilon":
        return (x - s * out) / a
    if coeffs.prediction_type == "v_prediction":
        return a * x - s * out
    if coeffs.prediction_type == "sample":
        return out
    raise ValueError(f"prediction_type {coeffs.prediction_type!r} is not one of {PREDICTION_TYPES}")


def multistep_step(coeffs: MultistepCoefficients, n: jax.Array | int, state: MultistepState,
                   model_output: jax.Array, noise: jax.Array | None = None) -> MultistepState:
    """One step: data prediction, UniC correction (where set), predictor update to level n + 1."""
    x = state.x.astype(jnp.float32)
    m0 = data_prediction(coeffs, n, x, model_output)
    kx, k0, k1, k2 = (coeffs.corrector[n, i] for i in range(4))
    corrected = kx * state.last + k0 * m0 + k1 * state.m1 + k2 * state.m2
    xc = jnp.where(coeffs.use_corrector[n], corrected, x)
    px, p0, p1, pz = (coeffs.predictor[n, i] for i in range(4))
    x_next = px * xc + p0 * m0 + p1 * state.m1
    if coeffs.stochastic:
        if noise is None:
            raise ValueError("multistep_step: sde-dpmsolver++ needs per-step `noise`")
        x_next = x_next + pz * noise.astype(jnp.float32)
    return MultistepState(x=x_next.astype(state.x.dtype), last=xc, m1=m0, m2=state.m1)


def multistep_sample(
    denoise_fn: DenoiseFn,
    x_T: jax.Array,
    coeffs: MultistepCoefficients,
    *,
    key: jax.Array | None = None,
    noises: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Run all N steps from x_T = z (init_noise_sigma 1). `denoise_fn(x, t)` gets the int32 scalar t.
    SDE-DPM-Solver++ needs `key` or per-step `noises` (N, *x.shape). Trajectory[n] = x after step n."""
    where = "multistep_sample"
    noises = step_noises(x_T, coeffs.num_steps, key, noises, where) if coeffs.stochastic else None
    if coeffs.stochastic and noises is None:
        raise ValueError(f"{where}: sde-dpmsolver++ needs `key` or `noises`")

    def body(state, inputs):
        n, noise = inputs
        out = denoise_fn(state.x, coeffs.timesteps[n])
        state = multistep_step(coeffs, n, state, out, noise)
        return state, (state.x if return_trajectory else None)

    state, trajectory = jax.lax.scan(body, multistep_init(x_T), (jnp.arange(coeffs.num_steps), noises))
    return (state.x, trajectory) if return_trajectory else state.x
