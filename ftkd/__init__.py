"""ftkd: Future Temporal Knowledge Distillation for camera-only multi-view temporal 3D detection."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `ftkd.predict(...)` / `ftkd.Predictor(...)`: the raw-camera API, imported on first use (keeps `import ftkd` light)
    if name in ("predict", "Predictor", "Calibration"):
        from ftkd.deploy import predict as module

        return getattr(module, name)
    raise AttributeError(f"module 'ftkd' has no attribute {name!r}")
