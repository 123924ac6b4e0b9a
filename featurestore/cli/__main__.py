"""``python -m featurestore.cli``."""

from . import main

main()
