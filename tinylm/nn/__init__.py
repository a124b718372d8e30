"""``tinylm.nn``: modules and layers with PyTorch's names, shapes and parameter names."""

from tinylm.nn import functional, init, parallel, utils
from tinylm.nn.attention import MultiheadAttention
from tinylm.nn.basic import (
    GELU,
    CrossEntropyLoss,
    Dropout,
    Embedding,
    Identity,
    LayerNorm,
    Linear,
    ModuleDict,
    ModuleList,
    MSELoss,
    NLLLoss,
    ReLU,
    Sequential,
    Sigmoid,
    SinusoidalPositionalEncoding,
    Tanh,
)
from tinylm.nn.lstm import LSTM, lstm_cell
from tinylm.nn.module import Module, Parameter
from tinylm.nn.parallel import DistributedDataParallel
from tinylm.nn.rnn import GRU, RNN

__all__ = [
    "Module", "Parameter", "Linear", "Embedding", "Dropout", "LayerNorm", "LSTM", "lstm_cell",
    "SinusoidalPositionalEncoding", "MultiheadAttention", "CrossEntropyLoss", "NLLLoss", "MSELoss",
    "ReLU", "GELU", "Tanh", "Sigmoid", "Identity", "ModuleList", "ModuleDict", "Sequential",
    "GRU", "RNN", "DistributedDataParallel", "functional", "init", "parallel", "utils",
]
