"""Concept-based explanations for Keras medical-imaging models (user-facing package)."""
