"""Unlabeled data: where it comes from (:mod:`.pool`), preprocessing (:mod:`.preprocess`), reading
(:mod:`.dataset`) and the transform unlabeled patches need (:mod:`.transforms`)."""
