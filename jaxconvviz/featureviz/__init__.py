"""Feature visualization.

Gradient ascent on inputs (filter patterns), whole-network atlases, and the
execution plan they share.
"""
