"""The annotation loop: which unlabeled cases to annotate next (suggest) and promoting corrected cases (promote)."""
