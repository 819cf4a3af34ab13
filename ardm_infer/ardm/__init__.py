"""The ARDM: schedule, guided sub-step kernel, process, analytic and learned denoisers."""

from .analytic import GaussianDenoiser, analytic_ardm, sampler_transition_moments, sampler_twin
from .kernel import SubStepInfo, substep
from .process import ARDM, FrameResult
from .schedule import DeterministicSamplerError, Schedule

__all__ = [
    "ARDM",
    "DeterministicSamplerError",
    "FrameResult",
    "GaussianDenoiser",
    "Schedule",
    "SubStepInfo",
    "analytic_ardm",
    "sampler_transition_moments",
    "sampler_twin",
    "substep",
]
