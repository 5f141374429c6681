# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Progress bar for MONAI workflows."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine

__all__ = ["ProgressBarHandler"]


class ProgressBarHandler:
    """ignite's tqdm ``ProgressBar`` (with the running loss of a trainer), attachable from a bundle handler list.

    MONAI attaches handlers with ``handler.attach(engine)`` only, so the loss display of ignite's bar (an argument
    of its ``attach``) cannot be configured there; this wrapper passes it.

    Args:
        persist: keep the finished bar of each epoch on screen.
        disable: switch the bar off (e.g. in CI logs).
        desc: the bar's label (default: ignite's, ``Epoch [e/E]`` or ``Iteration``).
    """

    def __init__(self, persist: bool = False, disable: bool = False, desc: str | None = None) -> None:
        self.persist = persist
        self.disable = disable
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        """Attach to a trainer (its output's ``loss`` is shown) or an evaluator (iterations and ETA only).

        Args:
            engine: the trainer or evaluator.
        """
        if self.disable:
            return
        from ignite.handlers import ProgressBar

        def _loss(output: Any) -> dict[str, float]:
            if isinstance(output, dict) and "loss" in output:
                return {"loss": float(output["loss"].detach())}
            return {}

        kwargs = {} if self.desc is None else {"desc": self.desc}
        ProgressBar(persist=self.persist, **kwargs).attach(engine, output_transform=_loss)
