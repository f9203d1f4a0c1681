"""The synthetic driving world, written as a real nuScenes v1.0 dataset (`ftkd synth`).

    from ftkd.data.synth import SynthConfig, generate
    root = generate(SynthConfig.preset("tiny"), "data/synth")  # NuScenes(version="v1.0-synth", dataroot=root)
"""

from ftkd.data.synth.config import TRAIN_SPLIT, VAL_SPLIT, VERSION, SynthConfig
from ftkd.data.synth.generate import generate

__all__ = ["SynthConfig", "generate", "VERSION", "TRAIN_SPLIT", "VAL_SPLIT"]
