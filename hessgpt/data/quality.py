"""Quality filters for pretraining documents: web text (length, Gopher-style repetition, language) and code
(Python that parses, a share of comments, no secrets, no minified/generated files).

Each filter returns None to keep a document or a short reason (`"too_short"`, `"dup_lines"`, ...) that the
shard writer counts per source in the manifest:

    cfg = TextFilter(languages=["fr", "en"])
    text_reject_reason("Bonjour ...", cfg)           # None (kept) or "lang_de", "dup_ngram_5", ...
    code_reject_reason(source, "python", CodeFilter())  # None or "unparsable", "secret_aws_key", ...

The repetition thresholds are those of Gopher (Rae et al. 2021, appendix A): a document whose lines or
paragraphs repeat, or whose most frequent n-gram covers too many characters, is boilerplate or spam.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import Counter
from dataclasses import dataclass, field, fields

from hessgpt.errors import HessGPTError

# ---- text ------------------------------------------------------------------------------------------------


@dataclass
class TextFilter:
    min_chars: int = 200
    max_chars: int = 2_000_000
    min_words: int = 30
    mean_word_length: tuple[float, float] = (2.5, 12.0)
    max_dup_line_fraction: float = 0.30        # duplicated lines / lines
    max_dup_line_char_fraction: float = 0.20   # characters in duplicated lines / characters
    max_dup_para_fraction: float = 0.30
    # most frequent n-gram (n = 2, 3, 4): characters it covers / characters in words
    max_top_ngram_fraction: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # characters in duplicated n-grams (n = 5..10) / characters in words
    max_dup_ngram_fraction: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    min_alpha_word_fraction: float = 0.70      # words with at least one letter
    max_symbol_word_ratio: float = 0.10        # ('#' and '...') / words
    languages: list[str] | None = None          # None: any language
    min_lang_score: float = 0.50                # py3langid probability of the detected language

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "filters") -> "TextFilter":
        return _from_dict(cls, d, where)


_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]+")
_LANGID = None


def _lang(text: str) -> tuple[str, float]:
    global _LANGID
    if _LANGID is None:  # built on first use (per process): ~50 ms
        from py3langid import langid

        _LANGID = langid.LanguageIdentifier.from_modelpath(langid.MODEL_DIR / langid.MODEL_FILE, norm_probs=True)
    lang, score = _LANGID.classify(text[:5000])
    return lang, float(score)


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of their characters)."""
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for it in items:
        total_chars += len(it)
        if it in seen:
            dup += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup / max(1, len(items)), dup_chars / max(1, total_chars)


def _ngram_reasons(words: list[str], cfg: TextFilter) -> str | None:
    total = sum(len(w) for w in words)
    if total == 0:
        return None
    for n, limit in sorted(cfg.max_top_ngram_fraction.items()):
        if len(words) < n:
            continue
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        gram, c = counts.most_common(1)[0]
        if c > 1 and c * sum(len(w) for w in gram) / total > limit:
            return f"top_ngram_{n}"
    for n, limit in sorted(cfg.max_dup_ngram_fraction.items()):
        if len(words) < n:
            continue
        seen: set[tuple] = set()
        covered = [False] * len(words)  # words inside a repeated n-gram, each counted once
        for i in range(len(words) - n + 1):
            gram = tuple(words[i:i + n])
            if gram in seen:
                for j in range(i, i + n):
                    covered[j] = True
            else:
                seen.add(gram)
        if sum(len(w) for w, c in zip(words, covered) if c) / total > limit:
            return f"dup_ngram_{n}"
    return None


def text_reject_reason(text: str, cfg: TextFilter | None = None) -> str | None:
    """None if `text` is a plausible natural-language document, else the first failed check's name."""
    cfg = cfg or TextFilter()
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    words = [w.lower() for w in _WORD.findall(text)]
    alpha = [w for w in words if any(ch.isalpha() for ch in w)]
    if len(alpha) < cfg.min_words:
        return "too_few_words"
    mean = sum(len(w) for w in alpha) / len(alpha)
    if not cfg.mean_word_length[0] <= mean <= cfg.mean_word_length[1]:
        return "word_length"
    if len(alpha) / max(1, len(words)) < cfg.min_alpha_word_fraction:
        return "non_alpha"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / len(alpha) > cfg.max_symbol_word_ratio:
        return "symbols"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    frac, char_frac = _dup_fraction(lines)
    if frac > cfg.max_dup_line_fraction:
        return "dup_lines"
    if char_frac > cfg.max_dup_line_char_fraction:
        return "dup_line_chars"
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if _dup_fraction(paras)[0] > cfg.max_dup_para_fraction:
        return "dup_paragraphs"
    reason = _ngram_reasons(alpha, cfg)
    if reason:
        return reason
    if cfg.languages:
        lang, score = _lang(text)
        if lang not in cfg.languages or score < cfg.min_lang_score:
            return f"lang_{lang}" if lang not in cfg.languages else "lang_uncertain"
    return None


# ---- code ------------------------------------------------------------------------------------------------

# Credentials that must never be trained on (and would be memorised). Patterns from gitleaks/detect-secrets.
SECRET_PATTERNS = {
    "aws_key": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[0-9A-Z]{16}\b"),
    "aws_secret": re.compile(r"(?i)aws_?secret_?(?:access_?)?key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}\b"),
    "private_key": re.compile(r"-----BEGIN (?:RSA |DSA |EC |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b"),
    "gitlab_token": re.compile(r"\bglpat-[A-Za-z0-9_-]{20}\b"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    "google_api_key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "stripe_key": re.compile(r"\b[sr]k_live_[0-9A-Za-z]{24,}\b"),
    "openai_key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}\b|\bsk-proj-[A-Za-z0-9_-]{40,}\b"),
    "hf_token": re.compile(r"\bhf_[A-Za-z0-9]{34,}\b"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password_assignment": re.compile(
        r"(?i)\b(?:password|passwd|pwd|secret|api_?key|access_?token|auth_?token)\s*[:=]\s*['\"]"
        r"(?=[^'\"\s]*\d)(?=[^'\"\s]*[A-Za-z])[^'\"\s$%{}<>]{12,}['\"]"),
}

_GENERATED = re.compile(r"(?i)auto-?generated|do not edit|generated by (?:the )?protoc|autogenerated file")


@dataclass
class CodeFilter:
    min_chars: int = 100
    max_chars: int = 1_000_000
    max_line_length: int = 1000        # longer lines: minified or data blobs
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25   # StarCoder's alphanumeric-fraction filter
    min_comment_fraction: float = 0.01  # comment + docstring characters / characters (Python)
    max_comment_fraction: float = 0.80
    require_parse: bool = True         # Python: must parse with `ast`
    reject_secrets: bool = True
    reject_generated: bool = True

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "filters") -> "CodeFilter":
        return _from_dict(cls, d, where)


def find_secret(text: str) -> str | None:
    """Name of the first credential pattern found in `text`, or None."""
    for name, pat in SECRET_PATTERNS.items():
        if pat.search(text):
            return name
    return None


def python_comment_fraction(source: str) -> float:
    """Characters in comments and docstrings / characters in the source (0 if it cannot be tokenized)."""
    chars = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                chars += len(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return 0.0
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return chars / max(1, len(source))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                chars += len(doc)
    return chars / max(1, len(source))


def code_reject_reason(text: str, lang: str = "python", cfg: CodeFilter | None = None) -> str | None:
    """None if `text` is a file worth training the code model on, else the failed check's name."""
    cfg = cfg or CodeFilter()
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    lines = text.splitlines() or [""]
    if max(len(ln) for ln in lines) > cfg.max_line_length:
        return "long_lines"
    if sum(len(ln) for ln in lines) / len(lines) > cfg.max_mean_line_length:
        return "mean_line_length"
    if sum(ch.isalnum() for ch in text) / len(text) < cfg.min_alnum_fraction:
        return "non_alnum"
    if cfg.reject_generated and _GENERATED.search("\n".join(lines[:5])):
        return "generated"
    if cfg.reject_secrets:
        secret = find_secret(text)
        if secret:
            return f"secret_{secret}"
    if lang == "python":
        if cfg.require_parse:
            try:
                ast.parse(text)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                return "unparsable"
        share = python_comment_fraction(text)
        if share < cfg.min_comment_fraction:
            return "few_comments"
        if share > cfg.max_comment_fraction:
            return "mostly_comments"
    return None


# ---- one entry point for the shard writer ------------------------------------------------------------------

CODE_KINDS = ("python", "javascript", "html", "css")
KINDS = ("text",) + CODE_KINDS


@dataclass
class Filters:
    """The filters of one source: `kind` picks text or code checks; `enabled=False` keeps everything non-empty."""

    kind: str = "text"
    text: TextFilter = field(default_factory=TextFilter)
    code: CodeFilter = field(default_factory=CodeFilter)
    enabled: bool = True

    def reject_reason(self, doc: str) -> str | None:
        if not doc.strip():
            return "empty"
        if not self.enabled:
            return None
        if self.kind == "text":
            return text_reject_reason(doc, self.text)
        return code_reject_reason(doc, self.kind, self.code)


def _from_dict(cls, d: dict | None, where: str):
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise HessGPTError(f"{where}: unknown filter key(s) {unknown}; known: {sorted(known)}")
    for k in ("max_top_ngram_fraction", "max_dup_ngram_fraction"):
        if k in d and isinstance(d[k], dict):
            d[k] = {int(n): float(v) for n, v in d[k].items()}
    if "mean_word_length" in d:
        d["mean_word_length"] = tuple(d["mean_word_length"])
    return cls(**d)
