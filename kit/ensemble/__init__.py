"""Ensembles: blends of models' probabilities whose weights are fitted on out-of-fold rows."""
