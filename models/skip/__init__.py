"""Spotify sequential skip prediction: a small GLU/dilated-convolution encoder-decoder trained from a store.

* :mod:`.model` - :class:`SkipModel` (first-half encoder, second-half decoder, one skip_2 logit a position);
* :mod:`.train` - :func:`train_skip`: the model, loss and validation metric (mean average accuracy)
  handed to the shared loop :func:`models.training.fit` (checkpoints, resume, early stopping, history);
* :mod:`.evaluate` - :func:`predict_test`, :func:`score_submission`, :func:`baselines`, :func:`bayes_score`;
* :mod:`.logreg` - the logistic-regression baseline (scikit-learn, first-half statistics + track features);
* :mod:`.demo` - :func:`run_demo`: synth -> ingest -> train -> evaluate in a few CPU minutes.
"""

from .evaluate import baselines, bayes_score, load_model, predict_test, score_submission
from .model import SkipModel
from .train import TrainResult, train_skip

__all__ = ["SkipModel", "TrainResult", "baselines", "bayes_score", "load_model", "predict_test", "score_submission", "train_skip"]
