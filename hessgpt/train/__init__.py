"""Training: one script per stage, each readable top to bottom with its loop visible (nanoGPT style).

- `pretrain`: next-token pretraining on token shards (`hessgpt pretrain`);
- `sft`: supervised fine-tuning on conversations, full or LoRA, packed rows (`hessgpt sft`);
- `lora`: the LoRALinear wrapper, PEFT-format adapter save/load, merging (`hessgpt merge` is `merge`);
- `pipeline`: a YAML recipe chaining the stages, skipping finished ones (`hessgpt pipeline`);
- `common`: schedule, optimizer, RNG state, metrics, signals, memory check; `distributed`: DDP/FSDP setup.
"""
