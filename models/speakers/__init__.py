"""Speaker classification (the VoxCeleb-subset homework): Conformer, self-attention pooling, AM-softmax.

* :mod:`.model` - :class:`SpeakerNet` (prenet, masked torchaudio Conformer, masked attention pooling,
  batch norm, :class:`AMSoftmax` head with the margin in training only);
* :mod:`.data` - the speakers store's split (by utterance, stratified by speaker), labels, pooled mels;
* :mod:`.train` - :func:`train_speakers`: random crops to the shared loop :func:`models.training.fit`;
* :mod:`.baselines` - pooled mean + std mels, streamed; logistic regression and nearest class mean on them;
* :mod:`.oracle` - the ceiling: a Kalman-filter likelihood under the generator's planted truth;
* :mod:`.evaluate` - :func:`evaluate_speakers` (accuracy beside the baselines, random and the oracle),
  :func:`write_predictions` (the ``Id,Category`` CSV).
"""

from .baselines import fit_logistic_regression, nearest_mean, pooled_mels
from .evaluate import BASELINES, SpeakerEvaluation, evaluate_speakers, load_checkpoint, write_predictions
from .model import AMSoftmax, AttentionPooling, SpeakerNet
from .oracle import Planted, oracle_predict
from .train import DEFAULT_MODEL, predict_clips, speaker_loss, train_speakers

__all__ = ["BASELINES", "DEFAULT_MODEL", "AMSoftmax", "AttentionPooling", "Planted", "SpeakerEvaluation", "SpeakerNet",
           "evaluate_speakers", "fit_logistic_regression", "load_checkpoint", "nearest_mean", "oracle_predict",
           "pooled_mels", "predict_clips", "speaker_loss", "train_speakers", "write_predictions"]
