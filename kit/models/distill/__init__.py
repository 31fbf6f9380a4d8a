"""Distillation: a student trained on a teacher's out-of-fold probabilities, and pseudo-labels.

`teacher` finds the teacher's saved predictions (this run's model, or another run's) and checks
that they fit (same competition, rows and folds); `pseudo` picks the unlabelled rows the teacher
is sure of; `rows` assembles one fold's training rows and soft targets for the `student` kind
(kit.models.kinds.student), which trains like a transformer with kit.models.hf.distill's loss.
"""
