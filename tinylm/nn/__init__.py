"""``tinylm.nn``: modules and layers with PyTorch's names, shapes and parameter names."""

from tinylm.nn import functional, init, utils
from tinylm.nn.attention import MultiheadAttention
from tinylm.nn.basic import (
    CrossEntropyLoss,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    ModuleList,
    Sequential,
    SinusoidalPositionalEncoding,
)
from tinylm.nn.lstm import LSTM, lstm_cell
from tinylm.nn.module import Module, Parameter
from tinylm.nn.rnn import GRU, RNN

__all__ = [
    "Module", "Parameter", "Linear", "Embedding", "Dropout", "LayerNorm", "LSTM", "lstm_cell",
    "SinusoidalPositionalEncoding", "MultiheadAttention", "CrossEntropyLoss", "ModuleList",
    "Sequential", "functional", "init", "utils",
    "GRU", "RNN",
]
