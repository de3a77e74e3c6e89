"""Corpus BLEU and chrF (sacrebleu) for the bench's translation and summary items.

sacrebleu's defaults (13a tokenizer, chrF with char order 6, beta 2) so the numbers compare with published
ones; both are on a 0-100 scale.
"""

from __future__ import annotations


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """BLEU and chrF of hypotheses[i] against references[i] (one or more references per hypothesis).

    >>> corpus_scores(["le chat dort"], [["le chat dort"]])["chrf"]
    100.0
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return {"bleu": None, "chrf": None, "n": 0}
    # sacrebleu wants reference *streams*: streams[k][i] = k-th reference of sentence i (pad with the first)
    k = max(len(r) for r in references)
    streams = [[r[j] if j < len(r) else r[0] for r in references] for j in range(k)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams)
    chrf = sacrebleu.corpus_chrf(hypotheses, streams)
    return {"bleu": round(float(bleu.score), 2), "chrf": round(float(chrf.score), 2), "n": len(hypotheses)}
