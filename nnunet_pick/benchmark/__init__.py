"""Benchmark reproduction: seeded nnU-Net training runs (:mod:`.seeded_train`), the one-command driver
(:mod:`.runner`) and the paper-style report (:mod:`.report`)."""
