"""One training loop for every model family.

A family builds its model and loaders and hands :func:`fit` a :class:`TrainTask`: the model, its
config (checked on resume), a loss step and, optionally, a validation function with the metric that
drives early stopping. :func:`fit` owns everything else, the same way for every family:

* AdamW with linear warmup then cosine decay (:func:`warmup_cosine`) over the epochs or, with a time
  limit that comes first, over the time (so a time-limited run anneals by its deadline; the training
  time so far is in the checkpoint, so a resumed run continues the schedule), gradient clipping;
* mixed precision chosen in one place (:func:`amp_dtype`, :func:`autocast`) and ``torch.compile`` on CUDA;
* early stopping after ``patience`` epochs without a better validation metric, and a time limit: an
  epoch it cuts short is validated then (a history row for its part so far, ``best.pt`` when better),
  so any run that took a step leaves ``best.pt``;
* checkpoints written through the store's atomic writer: ``checkpoint.pt`` (model, optimizer,
  scheduler, gradient scaler, loader position, RNG states, history) after every epoch and when the
  time limit interrupts one, so a run resumes mid-epoch on exactly the batches it had left;
  ``best.pt`` (model + config + ``extra``) whenever the validation metric improves;
* a tqdm bar (loss, items/s, data-wait share), the history as ``history.csv`` and as TensorBoard
  event files in ``out_dir``;
* under ``torchrun`` (``distributed.py``): the loader dealt to the ranks at the same global batch, DDP
  (``TrainTask.find_unused_parameters`` for a model that leaves parameters without gradients), a torch
  stream of its own per rank, rank 0 alone writing, and resume at any world size (elastic, mid-epoch).

The loader is anything resumable: iterable over batch dicts, with ``__len__``, ``set_epoch``,
``state_dict``, ``load_state_dict`` and ``batches_done`` (``SessionBatches``, ``SegmentBatches``).

Modules: ``loop.py`` (:class:`TrainTask`, :func:`fit`, :class:`FitResult`), ``records.py`` (checkpoints,
``history.csv``, TensorBoard events), ``runtime.py`` (devices, the mixed-precision choice, seeds, RNG state).
"""

from .loop import LR_FLOOR, FitResult, ResumableLoader, TrainTask, fit, warmup_cosine
from .records import (
    BEST,
    CHECKPOINT,
    HISTORY,
    config_mismatch,
    find_checkpoint,
    read_checkpoint,
    save,
    write_history_csv,
)
from .runtime import amp_dtype, autocast, parse_device, seed_everything

__all__ = ["BEST", "CHECKPOINT", "HISTORY", "LR_FLOOR", "FitResult", "ResumableLoader", "TrainTask", "amp_dtype",
           "autocast", "config_mismatch", "find_checkpoint", "fit", "parse_device", "read_checkpoint", "save",
           "seed_everything", "warmup_cosine", "write_history_csv"]
