"""Splits by construction: train, dev and test never share a template, an entity or an operand integer.

Every list a generator draws from is partitioned by a hash of its items (`partition`), every integer by a
hash of its value (`int_split`); `SplitRandom` draws only from its split's part. Lists too small to split
are shared (listed in the stats)."""

import functools
import hashlib
import math
import random
from collections import Counter


# ---------------------------------------------------------------------------------------------------
# splits by construction: train / dev / test never share a template, an entity or an operand integer
# ---------------------------------------------------------------------------------------------------
SPLITS = ("train", "dev", "test")
SPLIT_SEED_OFFSET = {"train": 0, "dev": 7919, "test": 104729}   # each split is generated with its own seed


def _h(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def str_split(key: str) -> str:
    """The split an item belongs to by its stable hash: about 80% train, 10% dev, 10% test."""
    b = _h(key) % 100
    return "test" if b < 10 else "dev" if b < 20 else "train"


def int_split(n: int) -> str:
    """The split an operand integer belongs to (a hash bucket of n, not a visible digit pattern)."""
    return str_split(f"int:{n}")


MIN_PARTITIONED = 3    # lists with fewer distinct items are shared by all splits (listed in the stats)
MIN_INT_RANGE = 20     # integer ranges with fewer values are shared (list lengths, degrees, small coefficients)


def _item_key(x) -> str:
    return x if isinstance(x, str) else repr(x)


@functools.lru_cache(maxsize=None)
def partition(items: tuple) -> dict:
    """{split: [items]} for a list: distinct items by their stable hash, each split keeping at least one item.
    The empty string (no greeting, no politeness) is shared. Lists with < MIN_PARTITIONED items are shared."""
    uniq = list(dict.fromkeys(x for x in items if x != ""))
    shared = [""] if "" in items else []
    if len(uniq) < MIN_PARTITIONED:
        return {s: list(items) for s in SPLITS}
    parts = {s: [] for s in SPLITS}
    for x in uniq:
        parts[str_split(_item_key(x))].append(x)
    for s in ("test", "dev"):       # each split keeps at least one item: take the train item of lowest hash
        if not parts[s]:
            donor = max(("train", "dev", "test"), key=lambda d: len(parts[d]))
            x = min(parts[donor], key=lambda y: _h(_item_key(y)))
            parts[donor].remove(x)
            parts[s].append(x)
    # keep the list's weights (repeated items, e.g. several empty greetings) inside each split
    return {s: [x for x in items if (x == "" and shared) or x in parts[s]] for s in SPLITS}


class SplitRandom(random.Random):
    """random.Random whose content draws stay inside one split: choice/sample over lists of phrasings and
    entities take only the split's part of the list, randint over a range of >= MIN_INT_RANGE values only
    integers of the split, uniform only values whose cents are such integers. randrange/random/choices
    (structure: which sub-kind, how many operators) are not partitioned."""

    def __init__(self, seed, split: str = "train"):
        super().__init__(seed)
        self.split = split
        self.shared_lists: Counter = Counter()

    def _part(self, seq):
        if not seq or len(seq) > 5000:
            return seq
        try:
            items = tuple(seq)
            if isinstance(items[0], (int, float)) and not isinstance(items[0], bool) and len(set(items)) < 10:
                return seq            # a few numeric options (operator counts, weights): structure, shared
            if all(isinstance(x, str) and 0 < len(x) <= 2 for x in items):
                return seq            # operators, single symbols: structure
            part = partition(items)
        except TypeError:             # unhashable items
            return seq
        if part["train"] == part["test"]:   # too short to partition: shared, counted in the stats
            self.shared_lists[_item_key(items[0])[:60]] += 1
        return part[self.split]

    def choice(self, seq):
        return super().choice(self._part(seq))

    def sample(self, population, k, **kw):
        pop = list(population)
        if pop and not isinstance(pop[0], (int, float)):   # a few numbers to pick (bounds): structure, shared
            pop = self._part(pop)
        return super().sample(pop, min(k, len(pop)), **kw)

    def randint(self, a, b):
        if b - a + 1 < MIN_INT_RANGE:
            return super().randint(a, b)
        for _ in range(1000):
            n = super().randint(a, b)
            if int_split(n) == self.split:
                return n
        return n

    def uniform(self, a, b):
        return self.randint(int(math.ceil(a * 100)), int(b * 100)) / 100
