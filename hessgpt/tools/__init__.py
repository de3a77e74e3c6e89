"""Tools the chat model can call (the secure Python sandbox, ...)."""
