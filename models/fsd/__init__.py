"""FSDKaggle2019 audio tagging: a small single-channel ResNet on random log-mel crops, from a store.

* :mod:`.model` - :class:`FsdCNN` (depth and width are options; standardization stats in its buffers);
* :mod:`.data` - class list, the stratified curated validation split, noisy-clip policies, frame stats;
* :mod:`.train` - :func:`train_fsd`: BCE with logits, mixup and SpecAugment on the device, clip weights
  by noisy-clip policy, validation lwlrap, all through the shared loop :func:`models.training.fit`;
* :mod:`.inference` - sliding-window clip scores (:func:`predict_clips`);
* :mod:`.baseline` - the strongest simple baseline: one-vs-rest logistic regression on pooled log-mel;
* :mod:`.ceiling` - the ceiling row of a synthetic release: a detector that knows the planted events;
* :mod:`.evaluate` - :func:`evaluate_fsd` (lwlrap beside the baselines and the ceiling, submission);
* :mod:`.ablation` - ``python -m models.fsd.ablation``: the ablation table, several seeds a row.
"""

from .evaluate import FsdScores, baselines, evaluate_fsd, load_model, write_submission
from .inference import predict_clips, sliding_windows, window_starts
from .model import FsdCNN
from .train import DEFAULT_MODEL, DEFAULT_NOISY, FsdTrainResult, make_loss, train_fsd

__all__ = ["DEFAULT_MODEL", "DEFAULT_NOISY", "FsdCNN", "FsdScores", "FsdTrainResult", "baselines", "evaluate_fsd",
           "load_model", "make_loss", "predict_clips", "sliding_windows", "train_fsd", "window_starts",
           "write_submission"]
