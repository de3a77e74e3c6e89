"""Model configuration: one small dataclass, named presets, JSON in every checkpoint.

    cfg = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)
    cfg.to_json("config.json"); ModelConfig.from_json("config.json")

`hessgpt model info PRESET|CHECKPOINT` prints a config and its parameter count (loader.py, which also reads
the config of any kind of checkpoint path: `loader.load_config`).
"""

import dataclasses
import json
from dataclasses import dataclass

from hessgpt.errors import HessGPTError


@dataclass
class ModelConfig:
    vocab_size: int = 32008
    dim: int = 512                 # model width (HF hidden_size)
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int | None = None  # grouped-query attention; None = n_heads (plain multi-head)
    hidden_dim: int = 1408         # SwiGLU inner width (HF intermediate_size)
    head_dim: int | None = None    # None = dim // n_heads
    context_length: int = 1024     # longest sequence the model is trained/used for
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True    # lm_head shares the token embedding matrix
    dropout: float = 0.0           # on attention probabilities and residual branches (training only)
    activation_checkpointing: bool = False  # training: recompute each block in backward (keeps only its input)

    def __post_init__(self):
        for key in ("dim", "n_heads"):          # checked before they are used below (validate() checks the rest)
            _positive_int(key, getattr(self, key))
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise HessGPTError(f"config: dim={self.dim} is not divisible by n_heads={self.n_heads}")
            self.head_dim = self.dim // self.n_heads
        self.validate()

    def validate(self) -> None:
        for key in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "head_dim", "context_length"):
            _positive_int(key, getattr(self, key))
        for key in ("rope_theta", "norm_eps", "dropout"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise HessGPTError(f"config: {key} must be a number, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise HessGPTError(f"config: tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.n_heads % self.n_kv_heads:
            raise HessGPTError(f"config: n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise HessGPTError(f"config: head_dim={self.head_dim} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise HessGPTError(f"config: dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.activation_checkpointing, bool):
            raise HessGPTError(f"config: activation_checkpointing must be true or false, got {self.activation_checkpointing!r}")
        if self.rope_theta <= 0:
            raise HessGPTError(f"config: rope_theta must be positive, got {self.rope_theta}")

    # ---- (de)serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HessGPTError(f"{source}: unknown config key {unknown[0]!r} (known keys: {', '.join(sorted(known))})")
        return cls(**d)

    def to_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def from_json(cls, path: str) -> "ModelConfig":
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise HessGPTError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise HessGPTError(f"{path}: expected a JSON object")
        return cls.from_dict(d, source=path)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        if name not in PRESETS:
            raise HessGPTError(f"unknown model preset {name!r} (presets: {', '.join(PRESETS)})")
        return cls.from_dict({**PRESETS[name], **overrides}, source=f"preset {name}")

    # ---- sizes ------------------------------------------------------------------------------

    def num_params(self, embeddings: bool = True) -> int:
        d, h = self.dim, self.hidden_dim
        attn = d * self.n_heads * self.head_dim * 2 + d * self.n_kv_heads * self.head_dim * 2  # q,o + k,v
        mlp = 3 * d * h
        per_layer = attn + mlp + 2 * d  # + two RMSNorm weights
        emb = self.vocab_size * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        total = self.n_layers * per_layer + d + head + emb
        return total if embeddings else total - emb - head

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward = 6N plus attention), as in the PaLM/nanoGPT MFU estimate."""
        t = seq_len or self.context_length
        n = self.num_params(embeddings=False) + self.vocab_size * self.dim  # the LM head matmul counts even when tied
        return 6 * n + 12 * self.n_layers * self.n_heads * self.head_dim * t


def _positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise HessGPTError(f"config: {key} must be a positive integer, got {value!r}")


# Named presets. The three design sizes land within 10% of their names (tests check it).
PRESETS: dict[str, dict] = {
    # CPU sizes: train on 2 cores in minutes.
    "tiny": dict(vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, hidden_dim=384, context_length=256),
    "small": dict(vocab_size=8192, dim=256, n_layers=6, n_heads=8, n_kv_heads=4, hidden_dim=768, context_length=512),
    # HessGPT v1 chat model: GPT-2-size vocab, tied embeddings, ~51M parameters.
    "hessgpt-51m": dict(vocab_size=50257, dim=512, n_layers=8, n_heads=8, n_kv_heads=8, hidden_dim=1408, context_length=1024),
    # Model 2, the code specialist (~0.3B).
    "model2-0.3b": dict(vocab_size=32008, dim=896, n_layers=16, n_heads=14, n_kv_heads=2, hidden_dim=4864,
                        context_length=2048, rope_theta=1000000.0, tie_embeddings=False),
    # Model 1, the assistant (~0.5B).
    "model1-0.5b": dict(vocab_size=32008, dim=1280, n_layers=22, n_heads=20, n_kv_heads=5, hidden_dim=3840,
                        context_length=2048, rope_theta=1000000.0, tie_embeddings=False),
}
