import os

from hypothesis import HealthCheck, settings

# Small drawn arrays keep every property test quick; CI replays a fixed sequence of
# examples (derandomize) so a landing never depends on luck.
settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
# HYPOTHESIS_PROFILE=thorough: many more examples, for a long local hunt before a change lands.
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The CUDA tests' fixture that makes any kernel launch fail, for every test file.
from cuda_support import launches_refused  # noqa: E402, F401
