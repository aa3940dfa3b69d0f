"""Compatibility name: the run configuration lives in ``kerascls.config``."""

from kerascls.config import TrainConfig, merge_config, parse_model_args

__all__ = ["TrainConfig", "merge_config", "parse_model_args"]
