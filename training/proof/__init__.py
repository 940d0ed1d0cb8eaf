"""Proof of learning (issue 15, docs/proof_of_learning.md): a revealed model counts only if its
own miner's training run demonstrably produced it.

A miner's run starts from weights anchored to (round seed, miner address), each epoch's data
order comes from (round seed, miner address, epoch), and every epoch's checkpoint holds what a
replay needs; a validator replays a few epochs chosen after the reveal and compares.
"""
