"""Events a chat turn produces, shared by the engine's tool loop, the CLI, the web page and the API.

A backend's `stream_chat(...)` yields these in order; the final answer text arrives as "text" deltas.
"""

from dataclasses import dataclass, field
from typing import Any

# type is one of:
#   "text"         a delta of the assistant's visible answer (text=...)
#   "code"         model 1 wrote a code block (text=source, data={"lang": "python"|"html"|...})
#   "refined_code" model 1's code failed, model 2 rewrote it (text=source, data={"reason", "detail", "used",
#                  "verdict"}: why it was asked, and whether its program's result replaced model 1's)
#   "code_vote"    --code-votes K: model 1 wrote K blocks for one call, the block that runs next won the vote
#                  (text=its source, data={"candidates", "valid", "distinct", "winner_votes", "chosen", "replaced"})
#   "refine_skipped" model 2 was needed but not asked (text=why, data={"reason", "skipped": "context", ...})
#   "result"       the sandbox ran it (text=output, data={"status": "ok"|"error"|"timeout"|..., "duration_ms": ...})
#   "artifact"     a non-Python block kept for preview, never executed (text=source, data={"lang": "html"})
#   "tool_call"    a function call (data={"name": ..., "arguments": {...}, "id": ...})
#   "tool_result"  its result (text=..., data={"name": ...})
#   "search"       a search query (text=query) ; its hits arrive as "result"
#   "done"         end of turn (data={"finish_reason": "stop"|"length"|"tool_calls"|"cancelled",
#                                     "prompt_tokens": int, "completion_tokens": int})
EVENT_TYPES = ("text", "code", "code_vote", "refined_code", "refine_skipped", "result", "artifact", "tool_call", "tool_result", "search", "done")


@dataclass
class Event:
    type: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"type": self.type, "text": self.text, "data": self.data}
