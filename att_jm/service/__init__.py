"""The service (`att-jm serve`): the single writer and its parts.

- `bootstrap`: the composition root (store, views, connection, relay handle, script slot);
- `writer`: the loop (wait, read, handle the batch, timers);
- `batches`: a batch in one unit of work, split one by one when it fails;
- `units`: run and commit a unit of work; store faults retried, poison ended;
- `aftercommit`: what follows a commit (replies, the script, the relay, the views);
- `held`: a start held until the broker took its events;
- `routing`, `replies`: from a topic to its use case, and the answer;
- `dispatch`, `scripts`: the next start, and the one script slot;
- `status`, `sealing`, `inbox`, `lock`, `commands` (`serve`, `rebuild`).
"""

from att_jm.service.bootstrap import bootstrap
from att_jm.service.commands import rebuild, serve
from att_jm.service.writer import Writer

__all__ = ["Writer", "bootstrap", "rebuild", "serve"]
