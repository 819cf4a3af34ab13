"""Numerical truth: batched, device-agnostic solvers that are also processes.

- :class:`KuramotoSivashinsky` (1-D, ETDRK4)
- :class:`KolmogorovFlow` (2-D vorticity, pseudo-spectral, ETDRK4)
- :class:`Lorenz96` (RK4)
- :class:`LinearGaussianTwin` with the exact :func:`kalman_filter`
"""

from .etdrk4 import etdrk4_coefficients, etdrk4_step
from .kolmogorov import KolmogorovConfig, KolmogorovFlow, spectral_resample
from .ks import KSConfig, KuramotoSivashinsky
from .linear_gaussian import KalmanResult, LinearGaussianTwin, kalman_filter
from .lorenz96 import Lorenz96, Lorenz96Config

__all__ = [
    "KSConfig",
    "KalmanResult",
    "KolmogorovConfig",
    "KolmogorovFlow",
    "KuramotoSivashinsky",
    "LinearGaussianTwin",
    "Lorenz96",
    "Lorenz96Config",
    "etdrk4_coefficients",
    "etdrk4_step",
    "kalman_filter",
    "spectral_resample",
]
