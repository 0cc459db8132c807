"""Bridges from corewarding's rewards to other training libraries.

* ``corewarding.integrations.trl``: reward functions (majority voting, Co-rewarding-I) and a pair-aligned
  ``GRPOTrainer`` for TRL (needs the ``trl`` extra: ``pip install 'corewarding[trl]'``).

Nothing is imported here, so ``import corewarding.integrations`` never needs the optional libraries.
"""
