"""Python-style parameter types ("str", "List[int]", "int, optional") -> JSON schema.

xLAM and NexusRaven describe parameters with Python type strings, not JSON schema; the conversation
format's `tools[].parameters` is JSON schema (as glaive and OpenAI use).
"""

import re

_SIMPLE = {
    "str": "string", "string": "string", "text": "string",
    "int": "integer", "integer": "integer",
    "float": "number", "number": "number", "double": "number",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array", "tuple": "array", "set": "array", "sequence": "array",
    "dict": "object", "object": "object", "mapping": "object",
    "none": "null", "null": "null",
}  # fmt: skip


def _split_top(s: str) -> list[str]:
    """'int, List[str]' -> ['int', 'List[str]'] (commas inside brackets do not split)."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def type_schema(t: str) -> dict:
    """One Python type string -> a JSON schema dict ({} means any value)."""
    t = t.strip()
    m = re.fullmatch(r"([\w.]+)\s*\[(.*)\]", t, flags=re.S)
    if m:
        head, args = m.group(1).split(".")[-1].lower(), _split_top(m.group(2))
        if head == "optional" and args:
            return type_schema(args[0])
        if head in ("list", "set", "sequence", "iterable", "tuple"):
            items = type_schema(args[0]) if args and args[0] != "..." else {}
            return {"type": "array", "items": items} if items else {"type": "array"}
        if head in ("dict", "mapping"):
            return {"type": "object"}
        if head == "union":
            types = [type_schema(a).get("type") for a in args]
            if all(isinstance(x, str) for x in types):
                return {"type": types}
            return {}
    if " or " in t or "|" in t:
        alternatives = re.split(r"\s+or\s+|\|", t)
        return type_schema("Union[" + ", ".join(alternatives) + "]")
    return {"type": _SIMPLE[t.lower()]} if t.lower() in _SIMPLE else {}


def param_schema(t: str) -> tuple[dict, bool]:
    """A parameter's type string -> (schema, optional). 'str, optional' and Optional[...] are optional."""
    t = t.strip() if isinstance(t, str) else ""
    optional = False
    if re.search(r",\s*optional$", t, flags=re.I):
        t, optional = re.sub(r",\s*optional$", "", t, flags=re.I), True
    if re.match(r"optional\s*\[", t, flags=re.I):
        optional = True
    return type_schema(t), optional


def tool_schema(name: str, description: str, params: list[dict]) -> dict:
    """params: [{name, type, description?, default?, required?}] -> a tool definition with JSON schema."""
    props, required = {}, []
    for p in params:
        schema, optional = param_schema(p.get("type", ""))
        schema = dict(schema)
        if p.get("description"):
            schema["description"] = p["description"]
        has_default = "default" in p and p["default"] not in (None, "")
        if has_default:
            schema["default"] = p["default"]
        props[p["name"]] = schema
        is_required = p.get("required")
        if is_required is None:
            is_required = not optional and not has_default
        if is_required:
            required.append(p["name"])
    return {"name": name, "description": description or "", "parameters": {"type": "object", "properties": props, "required": required}}
