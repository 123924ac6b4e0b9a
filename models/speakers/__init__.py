"""Speaker classification (the VoxCeleb-subset homework): Conformer, self-attention pooling, AM-softmax.

* :mod:`.model` - :class:`SpeakerNet` (prenet, masked torchaudio Conformer, masked attention pooling,
  batch norm, :class:`AMSoftmax` head with the margin in training only);
* :mod:`.data` - the speakers store's split (by utterance, stratified by speaker), labels, pooled mels;
* :mod:`.train` - :func:`train_speakers`: random crops to the shared loop :func:`models.training.fit`;
* :mod:`.evaluate` - :func:`evaluate_speakers` (accuracy beside nearest-class-mean and random),
  :func:`write_predictions` (the ``Id,Category`` CSV).
"""

from .evaluate import SpeakerEvaluation, evaluate_speakers, load_checkpoint, nearest_mean, write_predictions
from .model import AMSoftmax, AttentionPooling, SpeakerNet
from .train import DEFAULT_MODEL, predict_clips, speaker_loss, train_speakers

__all__ = ["DEFAULT_MODEL", "AMSoftmax", "AttentionPooling", "SpeakerEvaluation", "SpeakerNet", "evaluate_speakers",
           "load_checkpoint", "nearest_mean", "predict_clips", "speaker_loss", "train_speakers",
           "write_predictions"]
