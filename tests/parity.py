"""The parity standard shared by every port test: max|jax - ref| <= rtol * max|ref| in float32."""

from __future__ import annotations

import numpy as np

PARITY_RTOL = 1e-4


def parity_error(out, ref) -> tuple[float, float]:
    """(max|out - ref|, max|ref|) as Python floats; shapes must agree exactly."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise AssertionError(f"shape mismatch: got {out.shape}, reference {ref.shape}")
    return float(np.max(np.abs(out - ref))), float(np.max(np.abs(ref)))


def assert_close(out, ref, rtol: float = PARITY_RTOL, name: str = "output") -> float:
    """Assert the parity standard and return the measured max abs error (printed with -s for closing notes)."""
    err, scale = parity_error(out, ref)
    if not np.all(np.isfinite(np.asarray(out))):
        raise AssertionError(f"{name}: non-finite values in output")
    print(f"[parity] {name}: max|d|={err:.3e} max|ref|={scale:.3e} ratio={err / max(scale, 1e-30):.2e}")
    assert scale > 0, f"{name}: reference is all zeros, the comparison would prove nothing"
    assert err <= rtol * scale, f"{name}: max|d|={err:.3e} > {rtol:g} * max|ref|={scale:.3e}"
    return err
