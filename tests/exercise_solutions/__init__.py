"""Learner-style solutions the exercise grader is tested on: correct/, ring_*/, mutants.py."""
