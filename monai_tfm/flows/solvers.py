# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""ODE/SDE integration over the flow step with counted network evaluations (docs/method.md section 2).

The ODE solvers are torchdiffeq's. What torchdiffeq does not offer is the evaluation count (the reference
code reported an adaptive dopri5 as "10 steps", docs/method.md section 9.4) and an Euler-Maruyama sampler for the
stochastic option; both are small and live here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from monai_tfm.utils.errors import MonaiTFMError

__all__ = [
    "FIXED_STEP_SOLVERS",
    "ADAPTIVE_SOLVERS",
    "check_solver",
    "is_adaptive",
    "SolverResult",
    "CountingField",
    "integrate",
    "euler_maruyama",
]

#: fixed-grid solvers and their network evaluations per step
FIXED_STEP_SOLVERS = {"euler": 1, "midpoint": 2, "heun2": 2, "rk4": 4}
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")


def is_adaptive(method: str) -> bool:
    """Whether ``method`` chooses its own steps (tolerances) rather than a fixed number of steps."""
    return method in ADAPTIVE_SOLVERS


def check_solver(method: str, error: type[Exception] = MonaiTFMError, extra: Sequence[str] = (), what: str = "") -> str:
    """The one check of a solver name: a fixed-step or adaptive torchdiffeq solver of :func:`integrate`, or one of
    ``extra`` (e.g. ``euler_maruyama`` where samples are drawn).

    Args:
        method: the solver name.
        error: the exception type raised (the caller's user error).
        extra: further names the caller accepts.
        what: text after the name in the message (e.g. `` for a flow model``).

    Returns:
        ``method``.

    Raises:
        error: an unknown name, with the known ones.
    """
    known = [*FIXED_STEP_SOLVERS, *ADAPTIVE_SOLVERS, *extra]
    if method not in known:
        raise error(f"unknown solver {method!r}{what}; expected one of {known}.")
    return method


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolverResult:
    """End state of an integration and its cost.

    Attributes:
        x: state at tau = 1.
        nfe: number of velocity-field (network) evaluations.
        method: solver name.
        steps: fixed steps (None for adaptive solvers).
    """

    x: torch.Tensor
    nfe: int
    method: str
    steps: int | None


class CountingField(torch.nn.Module):
    """Wrap a velocity function ``f(tau, x)`` and count its calls.

    Args:
        fn: the velocity function, called with a 0-d ``tau`` tensor and the state.
    """

    def __init__(self, fn: VelocityFn) -> None:
        super().__init__()
        self.fn = fn
        self.nfe = 0

    def forward(self, tau: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.nfe += 1
        return self.fn(tau, x)


def integrate(
    fn: VelocityFn,
    x0: torch.Tensor,
    method: str = "euler",
    steps: int = 10,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> SolverResult:
    """Integrate ``dx/dtau = fn(tau, x)`` from ``tau = 0`` to ``1`` with a torchdiffeq solver.

    Args:
        fn: velocity function ``(tau 0-d tensor, x) -> dx/dtau``.
        x0: initial state.
        method: ``euler``, ``midpoint``, ``rk4`` (fixed steps) or an adaptive method (``dopri5``, ...).
        steps: number of fixed steps (ignored by adaptive methods).
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.

    Returns:
        the end state and the counted number of evaluations.

    Raises:
        ValueError: unknown method or a non-positive step count.
    """
    field = CountingField(fn)
    # the flow-step grid in float64 for float64 states, else float32 (never in half precision)
    span_dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
    span = torch.tensor([0.0, 1.0], device=x0.device, dtype=span_dtype)
    if method in FIXED_STEP_SOLVERS:
        if int(steps) < 1:
            raise MonaiTFMError(f"solver steps must be >= 1, got {steps}.")
        out = odeint(field, x0, span, method=method, options={"step_size": 1.0 / int(steps)})
        return SolverResult(out[-1], field.nfe, method, int(steps))
    check_solver(method)
    out = odeint(field, x0, span, method=method, rtol=rtol, atol=atol)
    return SolverResult(out[-1], field.nfe, method, None)


def euler_maruyama(
    fn: VelocityFn,
    x0: torch.Tensor,
    steps: int = 10,
    diffusion: float = 0.0,
    generator: torch.Generator | None = None,
) -> SolverResult:
    """Euler-Maruyama sampling of ``dx = fn(tau, x) dtau + diffusion dW`` over [0, 1].

    With ``diffusion = 0`` this is exactly the Euler ODE solver. No torchdiffeq equivalent exists for SDEs
    (torchsde would be another dependency for a ten-line loop).

    Args:
        fn: velocity function.
        x0: initial state.
        steps: number of steps.
        diffusion: noise scale g of the SDE (the training ``sigma``).
        generator: optional generator for reproducible samples.

    Returns:
        the end state and the number of evaluations (= steps).

    Raises:
        ValueError: non-positive steps or negative diffusion.
    """
    if int(steps) < 1:
        raise MonaiTFMError(f"solver steps must be >= 1, got {steps}.")
    if diffusion < 0:
        raise MonaiTFMError(f"diffusion must be >= 0, got {diffusion}.")
    field = CountingField(fn)
    h = 1.0 / int(steps)
    x = x0
    for i in range(int(steps)):
        tau = torch.tensor(i * h, device=x0.device)
        x = x + h * field(tau, x)
        if diffusion > 0:
            noise = torch.randn(x.shape, generator=generator, device="cpu" if generator is None else generator.device)
            x = x + diffusion * (h**0.5) * noise.to(x.device, x.dtype)
    return SolverResult(x, field.nfe, "euler_maruyama", int(steps))
