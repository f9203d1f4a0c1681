"""Plain data containers that flow between data, models, distillation and engine."""

from ftkd.structures.batch import Batch, SampleMeta
from ftkd.structures.outputs import DenoisingOutput, DetectorOutput, Detections

__all__ = ["Batch", "SampleMeta", "DetectorOutput", "DenoisingOutput", "Detections"]
