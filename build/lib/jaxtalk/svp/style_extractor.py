"""SVP's probabilistic style prior (paper §3.1, Eq. 2-4) and its contrastive objective (Eq. 6-7).

Two StyleTalk-like branches (`StyleEncoder` without pooling) encode 3DMM expression coefficients
beta (B, N, 64) and Whisper-Tiny audio features alpha (B, N, 1920) into s_beta, s_alpha (B, N, d_s). They are fused
by cross attention into s_hat (B, N, d_s), and an attention aggregation with a trainable W_s gives a Gaussian:

    w = softmax_t(W_s s_hat)            (padded frames get zero weight)
    mu = sum_t w s_hat,   var = sum_t w (s_hat - mu)^2,   s = mu + sqrt(var) * eps,  eps ~ N(0, I)

Choices the paper leaves open (all in `StyleExtractorConfig`):
- `fusion="exp_queries_audio"` (default): s_hat = LayerNorm(s_beta + CrossAttn(Q=s_beta, K=V=s_alpha)), post-norm
  like the branches; the expression stream carries the style and the audio stream supplements it.
  `fusion="symmetric"`: the mean of that and LayerNorm(s_alpha + CrossAttn(Q=s_alpha, K=V=s_beta)).
- `style_tokens=K`: W_s has K rows, giving K Gaussians (B, K, d_s) the UNet's style attention sees as K tokens;
  K=1 is the paper's s alone.
- Modality dropout (training only): per sample, the 3DMM branch is dropped with probability `drop_exp_prob` and
  the audio branch with `drop_audio_prob`, drawn from one uniform number so both are never dropped together.
  `dropped_branch="zero_input"` (the paper's wording: the inputs are set to zero) or `"null_token"` (the
  branch's output sequence is replaced by a learned vector).
- `deterministic=True`: the mu-only ablation (s = mu, as in StyleTalk).
- sqrt(var + 1e-8) keeps the gradient finite where the variance vanishes.

Randomness: `noise_key` (explicit) draws eps; without it s = mu. `train=True` enables transformer dropout (rng
stream 'dropout') and modality dropout (rng stream 'modality'). `apply(..., mutable=['intermediates'])` exposes
s_hat as `intermediates['s_hat']`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxtalk import config as cfg
from jaxtalk.nn import layers
from jaxtalk.nn.attention import Attention, Implementation
from jaxtalk.svp.style_encoder import StyleEncoder

Dtype = jnp.dtype
Modality = Literal["both", "exp", "audio"]
VAR_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class StyleExtractorConfig:
    """Sizes and training switches of the dual-branch style extractor (defaults follow StyleTalk's encoder)."""

    d_model: int = cfg.field(256, min=1, doc="d_s, the style width")
    heads: int = cfg.field(8, min=1)
    layers: int = cfg.field(3, min=1, doc="transformer layers per branch")
    ff: int = cfg.field(1024, min=1)
    exp_dim: int = cfg.field(64, min=1, doc="3DMM expression coefficients per frame")
    audio_dim: int = cfg.field(1920, min=1, doc="Whisper-Tiny: 5 hidden states x 384")
    pos_len: int = cfg.field(256, min=1, doc="longest clip (frames)")
    dropout: float = cfg.field(0.1, min=0.0, max=1.0)
    fusion: Literal["exp_queries_audio", "symmetric"] = "exp_queries_audio"
    tau: float = cfg.field(0.1, min=1e-6, doc="InfoNCE temperature")
    drop_exp_prob: float = cfg.field(0.2, min=0.0, max=1.0)
    drop_audio_prob: float = cfg.field(0.2, min=0.0, max=1.0)
    dropped_branch: Literal["zero_input", "null_token"] = "zero_input"
    deterministic: bool = False
    style_tokens: int = cfg.field(1, min=1, doc="tokens the UNet's style attention sees (1 = s alone)")

    def validate(self) -> None:
        if self.d_model % self.heads:
            raise cfg.ConfigError(f"heads: d_model={self.d_model} is not divisible by heads={self.heads}")
        if self.drop_exp_prob + self.drop_audio_prob > 1.0:
            raise cfg.ConfigError(
                f"drop_exp_prob + drop_audio_prob = {self.drop_exp_prob + self.drop_audio_prob} > 1: the two "
                "branches are dropped exclusively, so their probabilities must sum to at most 1")


@flax.struct.dataclass
class StylePrior:
    """Extractor output. s / mu / var: (B, K, d_s); weights: (B, T, K); keep_*: (B,) branch-kept flags."""

    s: jax.Array
    mu: jax.Array
    var: jax.Array
    weights: jax.Array
    keep_exp: jax.Array
    keep_audio: jax.Array


def sample_modality_dropout(key: jax.Array, batch: int, p_exp: float, p_audio: float) -> tuple[jax.Array, jax.Array]:
    """Per-sample (keep_exp, keep_audio): one uniform u per sample, drop exp if u < p_exp, audio if
    p_exp <= u < p_exp + p_audio — never both."""
    if p_exp < 0 or p_audio < 0 or p_exp + p_audio > 1:
        raise ValueError(f"modality dropout needs p_exp, p_audio >= 0 with p_exp + p_audio <= 1, got {p_exp}, {p_audio}")
    u = jax.random.uniform(key, (batch,))
    drop_exp = u < p_exp
    drop_audio = (u >= p_exp) & (u < p_exp + p_audio)
    return ~drop_exp, ~drop_audio


def aggregate_gaussian(s_hat: jax.Array, logits: jax.Array, pad_mask: jax.Array | None):
    """Eq. 2-3: (B, T, d), logits (B, T, K) -> mu, var (B, K, d) and weights (B, T, K), in float32."""
    logits = logits.astype(jnp.float32)
    if pad_mask is not None:
        logits = jnp.where(pad_mask[..., None], jnp.finfo(jnp.float32).min, logits)
    w = jax.nn.softmax(logits, axis=1)
    x = s_hat.astype(jnp.float32)
    mu = jnp.einsum("btk,btd->bkd", w, x)
    var = jnp.einsum("btk,btkd->bkd", w, jnp.square(x[:, :, None, :] - mu[:, None]))
    return mu, var, w


class _Fusion(nn.Module):
    """Post-norm cross attention of one stream over the other: LayerNorm(q + CrossAttn(q, kv))."""

    heads: int
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array, kv: jax.Array, mask: jax.Array | None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = q.shape[-1]
        a = Attention(self.heads, d // self.heads, qkv_bias=True, implementation=self.implementation,
                      name="cross_attn", **kw)(q, kv, mask=mask)
        return layers.layer_norm(name="norm", **kw)(q + a)


class ProbabilisticStyleExtractor(nn.Module):
    """`apply(v, exp[B,T,64], audio[B,T,1920], pad_mask[B,T] (True = padded), noise_key=..., train=...,
    modality='both'|'exp'|'audio') -> StylePrior`; `modality` (static) selects single-branch inference."""

    config: StyleExtractorConfig = StyleExtractorConfig()
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _branch(self, name: str, input_dim: int) -> StyleEncoder:
        c = self.config
        return StyleEncoder(c.d_model, c.heads, c.layers, c.ff, c.dropout, "relu", c.pos_len, input_dim, "none",
                            self.implementation, self.dtype, self.param_dtype, name=name)

    @nn.compact
    def __call__(
        self, exp: jax.Array, audio: jax.Array, pad_mask: jax.Array | None = None, *,
        noise_key: jax.Array | None = None, train: bool = False, modality: Modality = "both",
    ) -> StylePrior:
        c = self.config
        b, t = exp.shape[:2]
        if exp.shape != (b, t, c.exp_dim) or audio.shape != (b, t, c.audio_dim):
            raise ValueError(f"style extractor expects exp [B,T,{c.exp_dim}] and audio [B,T,{c.audio_dim}] on the "
                             f"same frames, got {exp.shape} and {audio.shape}")
        if pad_mask is not None and pad_mask.shape != (b, t):
            raise ValueError(f"pad_mask must be [B, T] = {(b, t)} (True = padded frame), got {pad_mask.shape}")
        if modality not in ("both", "exp", "audio"):
            raise ValueError(f"modality must be 'both', 'exp' or 'audio', got {modality!r}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        keep_exp = jnp.full((b,), modality != "audio")
        keep_audio = jnp.full((b,), modality != "exp")
        if train and modality == "both" and (c.drop_exp_prob > 0 or c.drop_audio_prob > 0):
            keep_exp, keep_audio = sample_modality_dropout(self.make_rng("modality"), b, c.drop_exp_prob,
                                                           c.drop_audio_prob)
        if c.dropped_branch == "zero_input":
            exp = exp * keep_exp[:, None, None].astype(exp.dtype)
            audio = audio * keep_audio[:, None, None].astype(audio.dtype)

        s_beta = self._branch("exp_branch", c.exp_dim)(exp, pad_mask, deterministic=not train)
        s_alpha = self._branch("audio_branch", c.audio_dim)(audio, pad_mask, deterministic=not train)
        if c.dropped_branch == "null_token":
            init = layers.partitioned(nn.initializers.normal(0.02), ("embed",))
            null_exp = self.param("null_exp", init, (c.d_model,), self.param_dtype).astype(s_beta.dtype)
            null_audio = self.param("null_audio", init, (c.d_model,), self.param_dtype).astype(s_alpha.dtype)
            s_beta = jnp.where(keep_exp[:, None, None], s_beta, null_exp)
            s_alpha = jnp.where(keep_audio[:, None, None], s_alpha, null_audio)

        mask = None if pad_mask is None else ~pad_mask[:, None, None, :]
        s_hat = _Fusion(c.heads, self.implementation, name="fusion_exp", **kw)(s_beta, s_alpha, mask)
        if c.fusion == "symmetric":
            s_hat_a = _Fusion(c.heads, self.implementation, name="fusion_audio", **kw)(s_alpha, s_beta, mask)
            s_hat = 0.5 * (s_hat + s_hat_a)
        s_hat = layers.constrain(s_hat, ("act_batch", "act_length", "act_embed"))
        self.sow("intermediates", "s_hat", s_hat)

        logits = layers.dense(c.style_tokens, name="style_query", use_bias=False, axes=("embed", None), **kw)(s_hat)
        mu, var, w = aggregate_gaussian(s_hat, logits, pad_mask)
        if c.deterministic or noise_key is None:
            s = mu
        else:
            s = mu + jnp.sqrt(var + VAR_EPS) * jax.random.normal(noise_key, mu.shape, jnp.float32)
        return StylePrior(s.astype(self.dtype), mu, var, w, keep_exp, keep_audio)


def style_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """zeta(a_i, b_j) = 1 / (||a_i - b_j||^2 + 1) for (N, D) x (M, D) -> (N, M), in (0, 1]."""
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    d2 = jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)
    return 1.0 / (d2 + 1.0)


def positives_from_labels(*labels: jax.Array) -> jax.Array:
    """(B, B) positive-pair matrix: equal in every label array (e.g. identity and emotion for MEAD, the source
    video for HDTF)."""
    if not labels:
        raise ValueError("positives_from_labels needs at least one label array")
    eq = jnp.ones((labels[0].shape[0],) * 2, bool)
    for lab in labels:
        eq = eq & (lab[:, None] == lab[None, :])
    return eq


def info_nce_loss(styles: jax.Array, positives: jax.Array, tau: float) -> jax.Array:
    """Eq. 6-7 averaged over all ordered positive pairs (i, p), p != i:

        L_ip = -log( w(s_p) / (w(s_p) + sum_{n: not positive, n != i} w(s_n)) ),   w(x) = exp(zeta(s_i, x) / tau)

    `styles`: (B, ...) flattened per sample; `positives`: (B, B) bool (the diagonal is ignored). A batch without
    any positive pair gives 0.
    """
    b = styles.shape[0]
    if positives.shape != (b, b):
        raise ValueError(f"positives must be ({b}, {b}), got {positives.shape}")
    s = styles.reshape(b, -1)
    z = style_similarity(s, s) / tau
    off_diag = ~jnp.eye(b, dtype=bool)
    pos = positives & off_diag
    neg = ~positives & off_diag
    neg_lse = jax.nn.logsumexp(jnp.where(neg, z, -jnp.inf), axis=1, keepdims=True)  # -inf when no negatives
    pair = jnp.logaddexp(z, neg_lse) - z
    count = jnp.sum(pos)
    return jnp.sum(jnp.where(pos, pair, 0.0)) / jnp.maximum(count, 1)
