"""``python -m dti`` (and ``accelerate launch -m dti``): the ``dti`` command."""

import sys

from dti.commands import main

sys.exit(main())
