"""OpenAssistant oasst1/oasst2: message trees -> conversations.

Two schemas: the tree export (`{message_tree_id, prompt: {text, role, rank, replies: [...]}}`, one
tree per line) and the HF flat message table (one row per message; `prepare` regroups the rows into
trees by `message_tree_id` and `parent_id`). Options: `paths="best"` follows the rank-0 reply at each
level (the "top1" thread), `paths="all"` yields every root-to-leaf thread; `lang=["fr", "en"]` keeps
trees whose prompt is in one of those languages (oasst's own `lang` label).
"""

from collections import defaultdict

from hessgpt.data.adapters import field, register
from hessgpt.data.conversation import Conversation, Message, Skip


def _usable(msg: dict) -> bool:
    return not msg.get("deleted") and msg.get("review_result") is not False


def _rank(msg: dict) -> tuple:
    r = msg.get("rank")
    return (r is None, r if isinstance(r, int) else 0)  # rank 0 first; unranked last


def _children(msg: dict) -> list[dict]:
    replies = msg.get("replies") or []
    if not isinstance(replies, list):
        raise Skip("wrong_type", "replies is not a list")
    return [r for r in replies if isinstance(r, dict) and _usable(r)]


def _paths(root: dict, mode: str) -> list[list[dict]]:
    if mode == "best":
        path, node = [root], root
        while kids := _children(node):
            node = min(kids, key=_rank)  # min is stable: the first of equal ranks
            path.append(node)
        return [path]
    out, stack = [], [[root]]
    while stack:
        path = stack.pop()
        kids = _children(path[-1])
        if not kids:
            out.append(path)
        stack.extend(path + [k] for k in reversed(kids))
    return out


def _to_message(msg: dict) -> Message:
    role = {"prompter": "user", "assistant": "assistant"}.get(msg.get("role"))
    if role is None:
        raise Skip("bad_role", repr(msg.get("role")))
    text = msg.get("text")
    if not isinstance(text, str):
        raise Skip("missing_field" if text is None else "wrong_type", "text")
    return Message(role, text.strip())


def group_flat(rows, **_options):
    """Flat message rows -> tree records (`prompt` with nested `replies`); other rows pass through.

    Stream items are (position, row) pairs or Skip instances (corrupt lines), which pass through.
    """
    trees: dict[str, list[dict]] = defaultdict(list)
    first_pos: dict[str, str] = {}
    for item in rows:
        if isinstance(item, Skip):
            yield item
            continue
        pos, row = item
        if isinstance(row, dict) and "prompt" in row:  # already a tree
            yield item
            continue
        if not isinstance(row, dict):
            yield Skip("wrong_type", f"record {pos} is {type(row).__name__}")
            continue
        if not isinstance(row.get("message_tree_id"), str) or not isinstance(row.get("message_id"), str):
            yield Skip("missing_field", f"record {pos}: message_tree_id/message_id")
            continue
        trees[row["message_tree_id"]].append(dict(row))
        first_pos.setdefault(row["message_tree_id"], pos)
    for tree_id, msgs in trees.items():
        by_id = {m["message_id"]: m for m in msgs}
        roots = []
        for m in msgs:
            m.setdefault("replies", [])
            parent = m.get("parent_id")
            if parent is None:
                roots.append(m)
            elif parent in by_id:
                by_id[parent].setdefault("replies", []).append(m)
        if len(roots) != 1:
            yield Skip("broken_tree", f"tree {tree_id} has {len(roots)} roots")
            continue
        yield first_pos[tree_id], {"message_tree_id": tree_id, "prompt": roots[0]}


@register("OpenAssistant/oasst2", "oasst2", "OpenAssistant/oasst1", "oasst1", "oasst", prepare=group_flat)
def oasst(row: dict, paths: str = "best", lang: list[str] | None = None) -> list[Conversation]:
    if paths not in ("best", "all"):
        raise ValueError(f"oasst option paths must be 'best' or 'all', not {paths!r}")
    root = field(row, "prompt", dict)
    tree_id = str(row.get("message_tree_id") or root.get("message_id") or "")
    tree_lang = root.get("lang")
    if lang and tree_lang not in lang:
        raise Skip("wrong_language", f"oasst lang {tree_lang!r}")
    if not _usable(root):
        raise Skip("deleted", "root message deleted or rejected")
    convs, seen = [], set()
    for path in _paths(root, paths):
        while path and path[-1].get("role") != "assistant":  # a thread ends on an assistant reply
            path = path[:-1]
        key = tuple(id(m) for m in path)
        if len(path) < 2 or key in seen:
            continue
        seen.add(key)
        cid = tree_id if paths == "best" else f"{tree_id}/{path[-1].get('message_id', len(convs))}"
        convs.append(Conversation([_to_message(m) for m in path], id=cid, lang=tree_lang))
    if not convs:
        raise Skip("no_assistant_reply", f"tree {tree_id} has no assistant reply")
    return convs
