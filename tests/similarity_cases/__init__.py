"""Instructor-only: the class of honest and copied submissions that measures course/code_similarity.py (build.py)."""
