"""`python -m att_jm.relay`: the relay process (see `att_jm.relay`)."""

import sys

from att_jm.relay.process import main

sys.exit(main())
