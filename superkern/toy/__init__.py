"""The paper's toy model y = ReLU(W W^T x + b): configs, data, reference and instance-batched
trainers (SPEC section 2).

Public: :class:`ToyConfig`, :class:`ToyResult`, :func:`train`, :func:`train_many`,
:func:`toy_probabilities`, :func:`sample_batch`, :func:`width_bucket`, :func:`load_weights`,
:func:`evaluate_test_losses`.
"""
from superkern.toy.api import train, train_many, width_bucket
from superkern.toy.config import ToyConfig
from superkern.toy.data import sample_batch, toy_probabilities
from superkern.toy.evaluate import evaluate_test_losses
from superkern.toy.result import ToyResult, load_weights

__all__ = ["ToyConfig", "ToyResult", "evaluate_test_losses", "load_weights", "sample_batch",
           "toy_probabilities", "train", "train_many", "width_bucket"]
