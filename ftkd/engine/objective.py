"""What the trainer optimises: an `Objective` wraps the detector being trained and returns named losses.

The trainer knows nothing else about models or distillation: it calls `objective(batch)`, weights the named
losses once with `objective.weight_dict` (keys absent there are logged, not optimised), back-propagates, and
checkpoints `objective.model` (the detector that is evaluated and exported) plus `objective.extra_state_dict()`
(trainable modules that are not part of the detector, e.g. distillation generators).
"""

from __future__ import annotations

from torch import Tensor, nn

from ftkd.structures import Batch, DetectorOutput


class Objective(nn.Module):
    """Base class: subclasses set `self.model` and `self.weight_dict` and implement `forward`."""

    model: nn.Module
    weight_dict: dict[str, float]

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        raise NotImplementedError

    def extra_state_dict(self) -> dict:
        """Trainable state outside `self.model` to checkpoint (none for plain detection)."""
        return {}

    def load_extra_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no extra state, got keys {sorted(state)[:5]}")


class DetectionObjective(Objective):
    """Plain supervised detection: the model's own criterion."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.weight_dict = dict(model.criterion.weight_dict)

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        output = self.model(batch)
        return self.model.criterion(output, batch), output
