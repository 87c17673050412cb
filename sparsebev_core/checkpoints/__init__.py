"""Weights on disk: the official checkpoint format and its strict load (``official``).

"Weights load wrongly" starts here. Training state (optimiser, schedule, RNG) is
``engine.train_state``.
"""
