"""backprop: neural networks trained by backpropagation you can read, on the CPU or an NVIDIA GPU.

    import backprop as bp
    net = bp.Sequential(bp.Dense(64, 64, activation="relu"), bp.Dense(64, 10), seed=0)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters()))
"""

from backprop.backends import DeviceUnavailableError, available_devices, get_backend
from backprop.backends.activations import ACTIVATIONS, Activation, register_activation
from backprop.boundary import to_numpy
from backprop.callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ProgressBar
from backprop.checkpoint import load, load_data_info, save
from backprop.clipping import clip_grad_norm
from backprop.datainfo import DataInfo
from backprop.gradcheck import gradcheck
from backprop.layers import (
    AvgPool2D,
    BatchNorm,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LayerNorm,
    MaxPool2D,
    register_layer,
)
from backprop.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HingeLoss,
    HuberLoss,
    Loss,
    MAELoss,
    MSELoss,
)
from backprop.metrics import Metric, TopKAccuracy
from backprop.network import Sequential
from backprop.optim import SGD, Adam, AdamW, CosineAnnealingLR, ExponentialLR, Optimizer, StepLR
from backprop.parameters import Parameter
from backprop.schedules import ReduceLROnPlateau
from backprop.training import History, TrainingDivergedError, evaluate, fit, predict

__version__ = "0.2.0"

__all__ = [
    "ACTIVATIONS", "SGD", "Activation", "Adam", "AdamW", "AvgPool2D", "BCELoss", "BCEWithLogitsLoss", "BatchNorm",
    "BatchNorm2D", "CSVLogger", "Callback", "Conv2D", "CosineAnnealingLR", "CrossEntropyLoss", "DataInfo", "Dense",
    "DeviceUnavailableError", "Dropout", "EarlyStopping", "ExponentialLR", "Flatten", "HingeLoss", "History",
    "HuberLoss", "Layer", "LayerNorm", "Loss", "MAELoss", "MSELoss", "MaxPool2D", "Metric", "ModelCheckpoint",
    "Optimizer", "Parameter", "ProgressBar", "ReduceLROnPlateau", "Sequential", "StepLR", "TopKAccuracy",
    "TrainingDivergedError", "available_devices", "clip_grad_norm", "evaluate", "fit", "get_backend", "gradcheck",
    "load", "load_data_info", "predict", "register_activation", "register_layer", "save", "to_numpy",
]
