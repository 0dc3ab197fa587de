"""Layers: the protocol every layer follows (base.py) and the built-in layers, one per module."""

from backprop.layers.base import LAYERS, Layer, layer_from_config, register_layer
from backprop.layers.batchnorm import BatchNorm
from backprop.layers.dense import Dense
from backprop.layers.dropout import Dropout
from backprop.layers.flatten import Flatten
from backprop.layers.layernorm import LayerNorm

__all__ = ["LAYERS", "BatchNorm", "Dense", "Dropout", "Flatten", "Layer", "LayerNorm", "layer_from_config",
           "register_layer"]
