"""``python -m featurestore.cli``."""

from . import run

run()
