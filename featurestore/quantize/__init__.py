"""8-bit quantizers as numcodecs codecs, the rule that picks one per column, and the bank that
applies one quantizer per column (or per bin) to whole blocks on the CPU and on the device.

The codecs are registered with numcodecs here and through the ``numcodecs.codecs`` entry point in
setup.cfg, so any process with fstore installed can ``numcodecs.get_codec(config)`` a store's
quantizer configs without importing fstore first.
"""

from __future__ import annotations

from numcodecs.registry import register_codec

from .affine import AffineQuantizer
from .bank import BlockEncoder, QuantizerBank, RangeScan, TorchDecoder
from .base import NAN_CODE, Quantizer
from .choose import SKEW_THRESHOLD, choose_quantizer, quantizer_from_config
from .exact import ExactQuantizer
from .quantile import QuantileQuantizer

for _cls in (AffineQuantizer, QuantileQuantizer, ExactQuantizer):
    register_codec(_cls)

__all__ = [
    "NAN_CODE",
    "SKEW_THRESHOLD",
    "AffineQuantizer",
    "BlockEncoder",
    "ExactQuantizer",
    "QuantileQuantizer",
    "Quantizer",
    "QuantizerBank",
    "RangeScan",
    "TorchDecoder",
    "choose_quantizer",
    "quantizer_from_config",
]
