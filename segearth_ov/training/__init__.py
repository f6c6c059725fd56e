"""SimFeatUp training: jitters, the attention downsampler, the losses, data and the loop."""
from .trainer import SimFeatUp, TrainConfig, Trainer

__all__ = ['SimFeatUp', 'TrainConfig', 'Trainer']
