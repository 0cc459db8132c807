"""Co-rewarding: self-supervised RL for LLM reasoning."""

__version__ = "0.1.0"
