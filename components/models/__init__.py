"""The model families: an explicit registry, so a reader can grep where each is wired in."""

from components.models.bert import BERT
from components.models.cnn import CNN
from components.models.lstm import LSTM
from components.models.mf import MF

MODELS = {
    "mf": MF,
    "lstm": LSTM,
    "cnn": CNN,
    "bert": BERT,
}
