"""The method kit: code several methods share (epoch loop, trainers, judges, plots, config bases).

Not a method (`seqrep.methods` skips packages). It may import from `seqrep` only `seqrep.method`,
and builds on the pure tensor blocks of `trainables.nn`.
"""
