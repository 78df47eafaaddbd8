"""Running tool commands with Keel's guarantees, whatever serves the tool: the processor (tool_called
with the command's offset before the call, the result in a second transaction, committed keys answered
from the ledger view, one attempt per key in flight, deadlines, breakers), the facts it publishes, and the
request/result types. The adapters service and tool workers (keel.worker) both run on it."""
