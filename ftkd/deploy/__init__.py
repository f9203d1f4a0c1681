"""Deployment: ONNX export of the online students, an ONNX Runtime stepper and a raw-camera predict API.

`export_onnx` (ftkd.deploy.export), `OnnxStep` / `TorchStep` (ftkd.deploy.runtime), `Predictor` / `predict`
(ftkd.deploy.predict); see docs/deploy.md.
"""
