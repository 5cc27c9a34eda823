"""The model families: an explicit registry, so a reader can grep where each is wired in.

The contract they share is components/models/contract.py; the Lightning system that trains
them (components/models/system.py) is not imported here, so loading and serving a model
never import Lightning.
"""

from components.models.bert import BERT
from components.models.cnn import CNN
from components.models.contract import Family, FamilyConfig, Search, SideInputs
from components.models.lstm import LSTM
from components.models.mf import MF

__all__ = ["MODELS", "Family", "FamilyConfig", "Search", "SideInputs"]

MODELS = {
    "mf": MF,
    "lstm": LSTM,
    "cnn": CNN,
    "bert": BERT,
}
