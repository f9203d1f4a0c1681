"""ftkd: Future Temporal Knowledge Distillation for camera-only multi-view temporal 3D detection."""

__version__ = "0.1.0"
