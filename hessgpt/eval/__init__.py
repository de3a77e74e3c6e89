"""Evaluation: perplexity / bits per byte, the /20 bilingual benchmark, tool-use metrics, reports.

    hessgpt eval ppl CKPT --data held_out.txt
    hessgpt eval bench CKPT --lang fr,en
    hessgpt eval tools --model1 CKPT --data routing_val.jsonl gsm8k_fr.jsonl
    hessgpt eval report runs/a runs/b --out reports/ab

Modules: ppl (strided NLL), bench + scoring + bleu (the benchmark), tools (dual-model tool use),
report (Markdown/JSON/plots), lm_eval (lm-evaluation-harness adapter), cli (the commands).
Nothing is imported here: `import hessgpt.eval` stays cheap.
"""
