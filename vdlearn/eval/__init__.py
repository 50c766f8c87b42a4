"""The judges (notebook 01): attribute classifier, motion tracker, quality, temporal consistency,
Frechet distance and prompt adherence."""

from vdlearn.eval.frechet import frechet_distance  # noqa: F401
from vdlearn.eval.judge import Judge, evaluate_judges  # noqa: F401
from vdlearn.eval.quality import quality  # noqa: F401
from vdlearn.eval.temporal import background_flicker, flicker, jerk, temporal  # noqa: F401
from vdlearn.eval.tracker import track  # noqa: F401
