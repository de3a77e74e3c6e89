"""Moving weights to and from other ecosystems.

    hf.py           Hugging Face Mistral/Llama folders: the reader (load_hf, from_hf) and save_hf
    gguf_import.py  GGUF files -> HessGPT (load_gguf, from_gguf)
    legacy.py       HessGPT v1 single-file .pt checkpoints (load_legacy)
    gguf.py         a loaded model -> GGUF (write_gguf)
    export.py       to_hf / to_gguf from any path hessgpt.load reads (above loader.py)
    cli.py          `hessgpt convert`: to-hf, from-hf, to-gguf, from-gguf
"""
