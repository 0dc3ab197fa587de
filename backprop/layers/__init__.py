"""Layers: the protocol every layer follows (base.py) and the built-in layers, one per module."""

from backprop.layers.base import LAYERS, Layer, layer_from_config, register_layer
from backprop.layers.batchnorm import BatchNorm
from backprop.layers.batchnorm2d import BatchNorm2D
from backprop.layers.conv import Conv2D
from backprop.layers.dense import Dense
from backprop.layers.dropout import Dropout
from backprop.layers.flatten import Flatten
from backprop.layers.layernorm import LayerNorm
from backprop.layers.pooling import AvgPool2D, MaxPool2D

__all__ = ["LAYERS", "AvgPool2D", "BatchNorm", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "Layer",
           "LayerNorm", "MaxPool2D", "layer_from_config",
           "register_layer"]
