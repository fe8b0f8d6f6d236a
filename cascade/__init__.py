"""Difficulty classifier, routing/cascade policies, threshold calibration, cost-quality metrics.

Domain code only: nothing here imports grpc or nats.
"""

from cascade.classifiers import CLASSIFIERS, DifficultyClassifier, make_classifier
from cascade.confidence import confidence
from cascade.policy import POLICIES, Plan, Policy, reaches
from cascade.thresholds import ThresholdError, Thresholds, load_thresholds

__all__ = [
    "CLASSIFIERS",
    "POLICIES",
    "DifficultyClassifier",
    "Plan",
    "Policy",
    "ThresholdError",
    "Thresholds",
    "confidence",
    "load_thresholds",
    "make_classifier",
    "reaches",
]
