"""The application layer: the Job Manager's use cases over the event store.

- `manager`: JobManager, the use cases as the writer calls them;
- `notifications`, `commands` (a handler per command type), `scheduling` (dispatch,
  a run's end, Auto Cleanup), `rejections`: the use cases;
- `model`: the write model (jobs, scheduler, executions) and its persistence (`commit`);
- `index`: the write side's index of the queue, the finished tables and the job names;
- `unit`: the unit of work; `replies`: what a reply says.
"""

from att_jm.application.manager import JobManager
from att_jm.application.replies import error_reply, job_row, ok_reply
from att_jm.application.scheduling import INTERRUPTED
from att_jm.application.unit import UnitOfWork

__all__ = ["INTERRUPTED", "JobManager", "UnitOfWork", "error_reply", "job_row", "ok_reply"]
