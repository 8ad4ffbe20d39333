"""Maths on layer activations: the activation/gradient engine, concept probes, UBS and statistics.

This package never imports :mod:`concepts`; it works on arrays and on any object that
follows the :class:`probes.sources.ArraySource` protocol.
"""
